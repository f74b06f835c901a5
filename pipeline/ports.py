"""What the ingestion pipeline needs from its caller: a narrow port, not the composition root.

`app.deps.Deps` provides it (handlers/ and cli/ pass theirs in); the pipeline never imports
handlers/ or app/, and raises alerts through `alert` rather than calling the alerting code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from adapters.publisher.base import Publisher
    from adapters.storage.base import ObjectStorage
    from adapters.warehouse.base import Warehouse
    from config.settings import Settings


class IngestPorts(Protocol):
    """Settings, clock, metadata sessions, object storage, the warehouse and the publisher."""

    settings: Settings
    clock: Callable[[], datetime]

    @property
    def sessions(self) -> sessionmaker[Session]: ...

    @property
    def storage(self) -> ObjectStorage: ...

    @property
    def warehouse(self) -> Warehouse: ...

    @property
    def publisher(self) -> Publisher: ...

    def alert(self, kind: str, ident: int) -> bool:
        """Raise alert `kind` (`file_error`, `file_stalled` for a file id); never raises."""
        ...
