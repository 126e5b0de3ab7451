from typing import Annotated

from fastapi import APIRouter, File, Header, Query, Response, UploadFile

from app.auth.dependencies import SessionDep, TenantDep
from app.config import get_settings
from app.core.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, Unauthorized, responses
from app.core.ownership import get_owned
from app.core.schemas import Page
from app.core.uploads import check_declared_size
from app.db.models import Dataset, Model
from app.resources import service
from app.resources.schemas import DatasetOut, ModelOut

router = APIRouter(prefix="/v1", responses=responses(Unauthorized))
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0)]
ContentLength = Annotated[int | None, Header()]


@router.post("/models", status_code=201, response_model=ModelOut, tags=["models"],
             responses=responses(InvalidInput, PayloadTooLarge))
def upload_model(session: SessionDep, tenant: TenantDep,
                 file: Annotated[UploadFile, File(description="A .pt2 written by torch.export.save, exported "
                                                             "with a dynamic batch dimension.")],
                 content_length: ContentLength = None) -> Model:
    """Upload a model. It is checked at once: a truncated or non-.pt2 file is refused with 422."""
    settings = get_settings()
    check_declared_size(content_length, settings.max_model_bytes, "model")
    return service.create_model(session, tenant, file, settings)


@router.get("/models", response_model=Page[ModelOut], tags=["models"])
def list_models(session: SessionDep, tenant: TenantDep, limit: Limit = 50, offset: Offset = 0) -> dict:
    items, total = service.list_owned(session, Model, tenant, limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/models/{model_id}", response_model=ModelOut, tags=["models"], responses=responses(NotFound))
def get_model(session: SessionDep, tenant: TenantDep, model_id: str) -> Model:
    return get_owned(session, Model, tenant, model_id)


@router.delete("/models/{model_id}", status_code=204, tags=["models"], responses=responses(NotFound, Conflict))
def delete_model(session: SessionDep, tenant: TenantDep, model_id: str) -> Response:
    service.delete_owned(session, Model, tenant, model_id)
    return Response(status_code=204)


@router.post("/datasets", status_code=201, response_model=DatasetOut, tags=["datasets"],
             responses=responses(InvalidInput, PayloadTooLarge))
def upload_dataset(session: SessionDep, tenant: TenantDep,
                   file: Annotated[UploadFile, File(description="An .npz whose arrays are named <split>.<input> "
                                                               "(train.x, train.y, val.x, ...); labels 'y' are "
                                                               "optional. Object arrays are refused.")],
                   content_length: ContentLength = None) -> Dataset:
    """Upload a dataset. Array names, dtypes and sizes are checked at once; nothing is unpickled."""
    settings = get_settings()
    check_declared_size(content_length, settings.max_dataset_bytes, "dataset")
    return service.create_dataset(session, tenant, file, settings)


@router.get("/datasets", response_model=Page[DatasetOut], tags=["datasets"])
def list_datasets(session: SessionDep, tenant: TenantDep, limit: Limit = 50, offset: Offset = 0) -> dict:
    items, total = service.list_owned(session, Dataset, tenant, limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, tags=["datasets"], responses=responses(NotFound))
def get_dataset(session: SessionDep, tenant: TenantDep, dataset_id: str) -> Dataset:
    return get_owned(session, Dataset, tenant, dataset_id)


@router.delete("/datasets/{dataset_id}", status_code=204, tags=["datasets"],
               responses=responses(NotFound, Conflict))
def delete_dataset(session: SessionDep, tenant: TenantDep, dataset_id: str) -> Response:
    service.delete_owned(session, Dataset, tenant, dataset_id)
    return Response(status_code=204)
