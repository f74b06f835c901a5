"""`caf ingest`'s files into the local bucket, copied on a thread while the process starts up.

Copying a 100 MB file with its MD5 takes ~0.2 s, and start-up (the metadata database, the
handler's libraries) ~0.5 s, on one core: the two overlap. Nothing becomes visible early: each
copy waits beside its object until `publish`, which runs after the metadata database answered
(where the copies used to start), and a start-up that fails discards them.
"""

from __future__ import annotations

import gc
import importlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.storage.base import ObjectInfo
    from adapters.storage.local import LocalStorage, PendingObject


class Uploads:
    """The copies of `files` as objects `prefix + file name` in `bucket` of a local storage."""

    def __init__(self, storage: LocalStorage, bucket: str, prefix: str, files: Sequence[Path]) -> None:
        self._storage = storage
        self._items = [(f"{prefix}{path.name}", path) for path in files]
        self._bucket = bucket
        self._pending: list[PendingObject] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._copy, name="caf-copy-in", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        try:
            for name, path in self._items:
                self._pending.append(self._storage.copy_in(self._bucket, name, path))
        except BaseException as exc:  # noqa: BLE001 - re-raised by publish, on the command's thread
            self._error = exc

    def publish(self, *, meanwhile: Sequence[str] = ()) -> list[ObjectInfo]:
        """The objects' infos once every copy is in place, in the files' order.

        `meanwhile`: modules to import while the copies run (those the handler imports on first
        use; importing them holds the GIL, the copy mostly runs without it), until they are done.
        """
        _import_while(meanwhile, self._thread.is_alive)
        self._thread.join()
        if self._error is not None:
            self.discard()
            raise self._error
        infos = []
        try:
            for pending in self._pending:
                infos.append(pending.publish())
        except BaseException:
            self.discard()  # the copies not yet published (a published one has no copy left)
            raise
        return infos

    def discard(self) -> None:
        """Remove the copies (the command failed before publishing them)."""
        self._thread.join()
        for pending in self._pending:
            pending.discard()
        self._pending.clear()


def _import_while(modules: Sequence[str], busy: Callable[[], bool]) -> None:
    """Import `modules` in order while `busy()`, without cyclic garbage collection (as during start-up,
    `cli.context.pause_gc`: imports make objects, not garbage), then freeze what they made."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        for module in modules:
            if not busy():
                break
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:  # a module the handler no longer has: nothing to warm
                if exc.name != module:
                    raise
    finally:
        if collecting:
            gc.freeze()
            gc.enable()
