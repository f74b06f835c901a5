"""Google Cloud Storage adapter: the ObjectStorage port on google-cloud-storage.

Vendor errors are translated here, once: NotFound -> ObjectNotFound, throttling / 5xx /
connection failures -> TransientError, everything else -> PermanentError. Messages name the
bucket and object, never credentials.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from adapters.storage.base import ObjectInfo, ObjectNotFound
from errors import CafError, PermanentError, TransientError, is_transient_http_status

if TYPE_CHECKING:
    from google.cloud.storage import Client

log = logging.getLogger("caf.adapters.storage.gcs")

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_LOCAL_PROJECT = "caf-local"


class GcsStorage:
    """ObjectStorage on Cloud Storage (or on a GCS emulator when `emulator_host` is given)."""

    def __init__(self, *, project: str | None = None, emulator_host: str | None = None, client: Any = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        """
        Args:
            project: billing / owner project; required by the emulator (defaults to "caf-local").
            emulator_host: e.g. "http://127.0.0.1:9023"; uses anonymous credentials.
            client: a ready `google.cloud.storage.Client` (tests); otherwise built on first use.
            chunk_size: bytes per ranged GET when streaming an object.
        """
        if emulator_host is not None and not emulator_host.startswith("http://"):
            raise PermanentError(f"storage emulator host {emulator_host!r} must start with http://")
        if chunk_size <= 0:
            raise PermanentError("chunk_size must be positive")
        self._project = project
        self._emulator_host = emulator_host
        self._client = client
        self._chunk_size = chunk_size
        self._lock = threading.Lock()

    # -- client ---------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> Client:
        from google.cloud.storage import Client

        if self._emulator_host is None:
            from adapters.credentials import google_credentials

            with google_credentials("Cloud Storage (STORAGE_URL=gs://)"):
                return Client(project=self._project)
        from google.auth.credentials import AnonymousCredentials

        # The endpoint goes in client_options rather than the process-wide STORAGE_EMULATOR_HOST
        # variable: same effect for this client, no global state shared with other clients.
        return Client(
            project=self._project or _LOCAL_PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self._emulator_host},
        )

    def close(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()

    # -- names ----------------------------------------------------------------------------
    def uri(self, bucket: str, name: str) -> str:
        return f"gs://{bucket}/{name}"

    def local_path(self, bucket: str, name: str) -> Path | None:
        return None

    # -- reads ----------------------------------------------------------------------------
    def stat(self, bucket: str, name: str) -> ObjectInfo:
        try:
            blob = self.client.bucket(bucket).get_blob(name)
        except Exception as exc:
            raise _translate(exc, "stat", bucket, name) from exc
        if blob is None:
            raise ObjectNotFound(f"gs://{bucket}/{name} does not exist")
        return _info(blob)

    def open_read(self, bucket: str, name: str, generation: int | None = None) -> BinaryIO:
        """Stream one object version in ranged chunks (never the whole object in memory).

        The metadata is fetched first for that generation: it pins the generation the chunks
        are read from, gives the size (so reading stops without a 416 round trip), and fails
        early with ObjectNotFound when the version is gone. The returned generation is also
        compared with the requested one, so an endpoint that ignores `generation` (the
        emulator does) cannot hand back a newer version's bytes.
        """
        try:
            blob = self.client.bucket(bucket).blob(name, generation=generation)
            blob.reload()
        except Exception as exc:
            raise _translate(exc, "open", bucket, name) from exc
        if generation is not None and blob.generation != generation:
            raise ObjectNotFound(f"gs://{bucket}/{name} generation {generation} no longer exists")
        raw = _BlobRangeReader(blob, bucket=bucket, name=name)
        return io.BufferedReader(raw, buffer_size=self._chunk_size)  # type: ignore[return-value]

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        try:
            return [_info(blob) for blob in self.client.list_blobs(bucket, prefix=prefix or None)]
        except Exception as exc:
            raise _translate(exc, "list", bucket, prefix + "*") from exc

    # -- writes ---------------------------------------------------------------------------
    def put_file(self, bucket: str, name: str, path: Path, content_type: str | None = None, *,
                 move: bool = False) -> ObjectInfo:
        blob = self.client.bucket(bucket).blob(name)  # `move`: nothing to save remotely, the file stays
        try:
            blob.upload_from_filename(str(path), content_type=content_type)
        except FileNotFoundError:
            raise PermanentError(f"cannot upload {path}: no such file") from None
        except Exception as exc:
            raise _translate(exc, "upload", bucket, name) from exc
        return _info(blob)

    def put_bytes(self, bucket: str, name: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        blob = self.client.bucket(bucket).blob(name)
        try:
            blob.upload_from_string(data, content_type=content_type or "application/octet-stream")
        except Exception as exc:
            raise _translate(exc, "upload", bucket, name) from exc
        return _info(blob)

    def move(self, bucket: str, name: str, new_name: str, generation: int | None = None) -> str | None:
        """Copy then delete, both conditioned on `generation` when given.

        Returns None when that version is gone (deleted, or overwritten by a newer upload that
        will get its own event). If a newer version lands between the copy and the delete, the
        delete's precondition fails and the newer version stays: our version was copied.
        """
        from google.api_core import exceptions as gexc

        client = self.client
        source_bucket = client.bucket(bucket)
        if generation is not None:
            # The server enforces the preconditions below; this check also covers endpoints
            # that ignore them (the emulator) and skips a pointless copy.
            try:
                current = source_bucket.get_blob(name, generation=generation)
            except Exception as exc:
                raise _translate(exc, "move", bucket, name) from exc
            if current is None or current.generation != generation:
                return None
        source = source_bucket.blob(name, generation=generation)
        try:
            source_bucket.copy_blob(source, source_bucket, new_name, source_generation=generation,
                                    if_source_generation_match=generation)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return None
        except Exception as exc:
            raise _translate(exc, "move", bucket, name) from exc
        try:
            source_bucket.blob(name).delete(if_generation_match=generation)
        except (gexc.NotFound, gexc.PreconditionFailed):
            log.info("gs://%s/%s changed or vanished after copy to %s; leaving it", bucket, name, new_name)
        except Exception as exc:
            raise _translate(exc, "move", bucket, name) from exc
        return self.uri(bucket, new_name)

    def delete(self, bucket: str, name: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.client.bucket(bucket).blob(name).delete()
        except gexc.NotFound:
            return
        except Exception as exc:
            raise _translate(exc, "delete", bucket, name) from exc


class _BlobRangeReader(io.RawIOBase):
    """Raw stream over one pinned object generation, fetched with ranged GETs.

    Bytes are read as stored (`raw_download=True`): a gzip-encoded object comes back
    compressed, like the local adapter's files, and range requests stay valid (GCS ignores
    ranges when it transcodes).
    """

    def __init__(self, blob: Any, *, bucket: str, name: str) -> None:
        super().__init__()
        self._source = blob.bucket
        self._generation: int = blob.generation
        self._bucket = bucket
        self._name = name
        self._size: int = blob.size or 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        # A fresh Blob per range: download_as_bytes overwrites the blob's generation from the
        # response headers, and an endpoint that omits x-goog-generation would unpin it.
        blob = self._source.blob(self._name, generation=self._generation)
        try:
            data = blob.download_as_bytes(start=self._pos, end=self._pos + want - 1, raw_download=True,
                                          checksum=None)
        except Exception as exc:
            raise _translate(exc, "read", self._bucket, self._name) from exc
        data = data[:want]
        if not data:
            raise TransientError(f"gs://{self._bucket}/{self._name}: empty read at byte {self._pos}")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(
        bucket=blob.bucket.name, name=blob.name, generation=int(blob.generation), size=int(blob.size or 0),
        md5=blob.md5_hash, crc32c=blob.crc32c, content_type=blob.content_type,
        content_encoding=blob.content_encoding, updated=blob.updated,
    )


def _translate(exc: Exception, action: str, bucket: str, name: str) -> CafError:
    """Map a google-cloud-storage / transport exception to the CAF error policy."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    where = f"gs://{bucket}/{name}"
    if isinstance(exc, CafError):
        return exc
    if isinstance(exc, gexc.NotFound):
        return ObjectNotFound(f"{where} does not exist")
    if isinstance(exc, gexc.GoogleAPICallError):
        status = int(exc.code) if exc.code is not None else 500
        text = f"GCS {action} {where} failed: HTTP {status} {exc.message}"
        if is_transient_http_status(status):
            return TransientError(text)
        return PermanentError(text)
    if isinstance(exc, gexc.RetryError):
        return TransientError(f"GCS {action} {where} kept failing until the retry deadline: {exc.cause}")
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return PermanentError(f"GCS {action} {where}: no Google credentials are configured")
    if isinstance(exc, auth_exc.TransportError) or (
            isinstance(exc, auth_exc.RefreshError) and getattr(exc, "retryable", False)):
        # Token refresh through the metadata server fails transiently during cold starts.
        return TransientError(f"GCS {action} {where}: no access token ({type(exc).__name__})")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return PermanentError(f"GCS {action} {where}: authentication failed ({type(exc).__name__})")
    if _is_connection_error(exc):
        return TransientError(f"GCS {action} {where}: connection failed ({type(exc).__name__})")
    return PermanentError(f"GCS {action} {where} failed: {type(exc).__name__}: {exc}")


def _is_connection_error(exc: Exception) -> bool:
    import requests
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    if isinstance(exc, ConnectionError | TimeoutError | requests.ConnectionError | requests.Timeout
                  | requests.exceptions.ChunkedEncodingError | DataCorruption):
        return True  # a corrupted transfer is retried like a dropped connection
    if isinstance(exc, InvalidResponse):
        status = getattr(exc.response, "status_code", None)
        return status is None or is_transient_http_status(int(status))
    return False
