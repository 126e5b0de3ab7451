from __future__ import annotations

import hashlib
from functools import partial
from typing import TypeVar

from fastapi import UploadFile
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict
from app.core.ownership import get_owned
from app.core.uploads import file_sha256, store_upload, upload_name
from compression.inspect import DatasetManifest, InspectedModel, inspect_dataset, inspect_model
from core.config import Settings
from core.db.models import Blob, Dataset, Job, Model, Tenant
from core.jobs.status import ACTIVE
from core.store.blobs import release_blobs

Resource = TypeVar("Resource", Model, Dataset)


def fingerprint(file: UploadFile, *options: str | None) -> str:
    """What makes two uploads the same request: the file's bytes, its name and the options sent with it (none sent
    reads as before options existed, so stored keys keep matching their retries)."""
    sent = "".join(f":{option}" for option in options if option is not None)
    return hashlib.sha256(f"{file_sha256(file)}:{file.filename}{sent}".encode()).hexdigest()


def create_model(session: Session, tenant: Tenant, file: UploadFile, settings: Settings,
                 task: str | None = None) -> Model:
    """A `.pt2` or a Hugging Face folder (`.zip`/`.tar`; either may come compressed as a whole), told apart by
    content; `task` only for a folder."""
    name = upload_name(file, "model.pt2")
    blob, inspected = store_upload(session, tenant, file, settings.max_model_bytes, "model",
                                   partial(inspect_model, limits=settings.archive_limits, task=task))
    return add_model(session, tenant, name, blob, inspected)


def add_model(session: Session, tenant: Tenant, name: str, blob: Blob, inspected: InspectedModel) -> Model:
    """The row of a stored, inspected model file (a normal or a resumable upload)."""
    model = Model(tenant_id=tenant.id, name=name, blob_id=blob.id, size_bytes=blob.size_bytes, sha256=blob.sha256,
                  kind=inspected.kind, task=inspected.task, signature=inspected.signature)
    session.add(model)
    session.flush()
    return model


def create_dataset(session: Session, tenant: Tenant, file: UploadFile, settings: Settings) -> Dataset:
    name = upload_name(file, "dataset.npz")
    blob, manifest = store_upload(session, tenant, file, settings.max_dataset_bytes, "dataset",
                                  partial(inspect_dataset, limits=settings.archive_limits))
    return add_dataset(session, tenant, name, blob, manifest)


def add_dataset(session: Session, tenant: Tenant, name: str, blob: Blob, manifest: DatasetManifest) -> Dataset:
    """The row of a stored, inspected dataset file (a normal or a resumable upload)."""
    dataset = Dataset(tenant_id=tenant.id, name=name, blob_id=blob.id, size_bytes=blob.size_bytes,
                      sha256=blob.sha256, manifest=manifest.to_json())
    session.add(dataset)
    session.flush()
    return dataset


def list_owned(session: Session, kind: type[Resource], tenant: Tenant, limit: int, offset: int
               ) -> tuple[list[Resource], int]:
    query = select(kind).where(kind.tenant_id == tenant.id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    items = session.scalars(query.order_by(kind.created_at.desc(), kind.id).limit(limit).offset(offset)).all()
    return list(items), total


def delete_owned(session: Session, kind: type[Resource], tenant: Tenant, resource_id: str) -> None:
    resource = get_owned(session, kind, tenant, resource_id)
    column = Job.model_id if kind is Model else Job.dataset_id
    active = session.scalar(select(func.count()).where(column == resource.id, Job.status.in_(ACTIVE)))
    if active:
        raise Conflict(f"{kind.__name__.lower()} {resource_id} is used by {active} queued or running job(s); "
                       "cancel them or wait for them to finish before deleting it")
    blob_id = resource.blob_id
    session.delete(resource)
    release_blobs(session, [blob_id])
