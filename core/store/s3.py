"""An S3-protocol object store (AWS S3, MinIO, ...) through boto3: `s3://bucket/optional/prefix`.

Uploads are multipart above 16 MiB, so a large file is sent in parts with a few in flight (memory stays at
parts x concurrency) and appears only when the upload completes: S3's own atomic write. Downloads can be handed
to clients as presigned URLs."""

from __future__ import annotations

from typing import BinaryIO, Iterator
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from core.store.base import (
    READ_CHUNK_BYTES,
    HashingReader,
    ObjectMissing,
    ObjectStore,
    StoredObject,
    Written,
    check_key,
)

TRANSFER = TransferConfig(multipart_threshold=16 * 1024**2, multipart_chunksize=16 * 1024**2, max_concurrency=4)


class S3Store(ObjectStore):
    def __init__(self, url: str, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 public_endpoint_url: str | None = None):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"MODELPRESS_STORE_URL {url!r}: an S3 store is s3://bucket or s3://bucket/prefix")
        self.url, self.bucket = url, parsed.netloc
        self.prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        options = {"region_name": region or "us-east-1", "aws_access_key_id": access_key_id,
                   "aws_secret_access_key": secret_access_key,
                   # Path-style addressing: MinIO and other self-hosted servers do not resolve bucket subdomains.
                   "config": Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                    retries={"max_attempts": 5, "mode": "standard"})}
        self.client = boto3.client("s3", endpoint_url=endpoint_url, **options)
        # Presigned URLs name the host clients reach, which may differ from the one the services use.
        self.presigner = boto3.client("s3", endpoint_url=public_endpoint_url, **options) \
            if public_endpoint_url else self.client

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _prefix(self, prefix: str) -> str:
        return self._key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "") if prefix else self.prefix

    def write(self, key: str, source: BinaryIO, limit: int | None = None) -> Written:
        reader = HashingReader(source, limit)
        self.client.upload_fileobj(reader, self.bucket, self._key(key), Config=TRANSFER)
        return reader.written()

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        byte_range = f"bytes={start}-{'' if end is None else end}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=byte_range)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code in ("NoSuchKey", "404"):
                raise ObjectMissing(key) from None
            if code == "InvalidRange":  # an empty object, or a start past its end
                return
            raise
        body = response["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK_BYTES)
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def move(self, source_key: str, target_key: str) -> None:
        # Managed copy: server-side, in parts for objects over 5 GB (S3's limit for a single copy).
        try:
            self.client.copy({"Bucket": self.bucket, "Key": self._key(source_key)}, self.bucket,
                             self._key(target_key), Config=TRANSFER)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey"):
                raise ObjectMissing(source_key) from None
            raise
        self.delete(source_key)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=self._prefix(prefix))
        for page in pages:
            for entry in page.get("Contents", []):
                yield StoredObject(entry["Key"][len(self.prefix):], entry["Size"], entry["LastModified"])

    def presign(self, key: str, filename: str, expires_s: int) -> str | None:
        return self.presigner.generate_presigned_url(
            "get_object", ExpiresIn=expires_s,
            Params={"Bucket": self.bucket, "Key": self._key(key),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"'})

    def ensure_ready(self) -> None:
        """Create the bucket if it does not exist."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)
