"""Uploaded models and datasets: the inputs of jobs."""
from typing import Annotated

from fastapi import APIRouter, Depends, Response, UploadFile
from fastapi.responses import JSONResponse

from app.auth.dependencies import SessionDep, TenantDep
from app.core.errors import (
    BadRequest,
    Conflict,
    IdempotencyKeyReused,
    InternalError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    UnsupportedMediaType,
    responses,
)
from app.core.idempotency import IdempotencyKey, respond_once
from app.core.ownership import get_owned
from app.core.pagination import Limit, Offset
from app.core.schemas import Page
from app.core.uploads import upload_file
from app.resources import service
from app.resources.schemas import DatasetOut, ModelOut, Task
from core.config import get_settings
from core.db.models import Dataset, Model

router = APIRouter(prefix="/v1", responses=responses(BadRequest, Unauthorized, InvalidInput, InternalError))
ModelFile = Annotated[UploadFile, Depends(upload_file("model"), scope="function")]
DatasetFile = Annotated[UploadFile, Depends(upload_file("dataset"), scope="function")]
UPLOAD_ERRORS = responses(Conflict, PayloadTooLarge, UnsupportedMediaType, InvalidInput, IdempotencyKeyReused,
                          QuotaExceeded)


def multipart_body(description: str) -> dict:
    """The request body for OpenAPI: the file is read by a dependency (after the key and quota checks), so
    FastAPI cannot describe it itself."""
    schema = {"type": "object", "required": ["file"],
              "properties": {"file": {"type": "string", "format": "binary", "description": description}}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@router.post("/models", status_code=201, response_model=ModelOut, tags=["models"], responses=UPLOAD_ERRORS,
             openapi_extra=multipart_body("A .pt2 written by torch.export.save, exported with a dynamic batch "
                                          "dimension; or a Hugging Face model folder (config.json, *.safetensors, "
                                          "tokenizer files) as a .zip or .tar (docs/huggingface.md). A file "
                                          "compressed as a whole (.tar.gz, .tar.xz, .tar.bz2, a gzipped .pt2) "
                                          "is stored decompressed."))
def upload_model(session: SessionDep, tenant: TenantDep, file: ModelFile, task: Task = None,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Upload a model. It is checked at once: a truncated or unreadable file, pickled weights or Python files in a
    folder, or a task the model cannot do are refused with 422; 413 over the size limit, 429 over the tenant's
    storage quota."""
    return respond_once(session, tenant, idempotency_key, "POST /v1/models",
                        lambda: service.fingerprint(file, task), 201,
                        lambda: ModelOut.model_validate(service.create_model(session, tenant, file, get_settings(),
                                                                             task)))


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


@router.post("/datasets", status_code=201, response_model=DatasetOut, tags=["datasets"], responses=UPLOAD_ERRORS,
             openapi_extra=multipart_body("An .npz whose arrays are named <split>.<input> (train.x, train.y, "
                                          "val.x, ...); labels 'y' are optional; a speech model's reference "
                                          "transcripts go in <split>.transcript (one string per example, a numpy "
                                          "unicode array). Object arrays are refused. Or a "
                                          ".jsonl of {\"split\", \"text\", \"label\"?} rows for a Hugging Face "
                                          "folder model (\"text_pair\" for sentence pairs, \"tags\" for a token "
                                          "classifier, \"answer\" for a reader, \"target\" for a seq2seq-lm "
                                          "model's output text)."))
def upload_dataset(session: SessionDep, tenant: TenantDep, file: DatasetFile,
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Upload a dataset. Array names, dtypes and sizes are checked at once; nothing is unpickled. 413 over the
    size limit, 429 over the tenant's storage quota."""
    return respond_once(session, tenant, idempotency_key, "POST /v1/datasets", lambda: service.fingerprint(file),
                        201, lambda: DatasetOut.model_validate(service.create_dataset(session, tenant, file,
                                                                                      get_settings())))


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
