"""What the task engine needs from its caller: a narrow port, not the composition root.

`app.deps.Deps` provides it (handlers/ and cli/ pass theirs in); the engine never imports
handlers/ or app/, and raises alerts through `alert` rather than calling the alerting code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from adapters.publisher.base import Publisher
    from adapters.warehouse.base import Warehouse
    from config.settings import Settings


class TaskPorts(Protocol):
    """Settings, clock, metadata sessions and the clients task kinds call."""

    settings: Settings
    clock: Callable[[], datetime]

    @property
    def sessions(self) -> sessionmaker[Session]: ...

    @property
    def publisher(self) -> Publisher: ...

    @property
    def warehouse(self) -> Warehouse: ...

    @property
    def dataform(self) -> Any: ...

    @property
    def powerbi(self) -> Any: ...

    def alert(self, kind: str, ident: int) -> bool:
        """Raise alert `kind` (`task_error` for a task_log id, `batch_done` for a batch id); never raises."""
        ...
