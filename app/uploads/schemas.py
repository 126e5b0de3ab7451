from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.resources.schemas import DatasetOut, ModelOut

MIN_PART_BYTES = 1024**2


class UploadCreate(BaseModel):
    model_config = {"extra": "forbid"}

    kind: Literal["model", "dataset"]
    name: str = Field(min_length=1, max_length=200, description="File name, e.g. model.pt2 or data.npz.")
    size_bytes: int = Field(gt=0, description="Size of the whole file.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the whole file, lower-case hex.")
    part_bytes: int | None = Field(None, ge=MIN_PART_BYTES, description="Size of every part but the last; "
                                   "default and maximum: the service's MODELPRESS_UPLOAD_PART_MAX_BYTES.")


class UploadOut(BaseModel):
    id: str
    kind: str
    name: str
    size_bytes: int
    sha256: str
    part_bytes: int
    parts_total: int
    parts_received: list[int] = Field(description="Numbers (from 0) of the parts stored so far.")
    bytes_received: int
    expires_at: datetime
    result: ModelOut | DatasetOut | None = Field(None, description="The model or dataset, once completed.")


class PartOut(BaseModel):
    number: int
    size_bytes: int
    sha256: str
