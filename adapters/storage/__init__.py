"""Object storage adapters: a local folder per bucket, or Google Cloud Storage."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.storage.base import ObjectStorage
    from config.settings import Settings


def build_storage(settings: Settings) -> ObjectStorage:
    if settings.storage_root is not None:
        from adapters.storage.local import LocalStorage

        return LocalStorage(settings.storage_root)
    from adapters.storage.gcs import GcsStorage

    return GcsStorage(project=settings.gcp_project, emulator_host=settings.storage_emulator_host)
