"""Google Cloud Pub/Sub publisher (constructed only when configured)."""

from __future__ import annotations

from typing import Any

from errors import PermanentError, TransientError
from values.messages import OutgoingMessage


class PubSubPublisher:
    def __init__(self, *, project: str, topic: str, client: Any = None, timeout: float = 30.0) -> None:
        self.topic_path = f"projects/{project}/topics/{topic}"
        self._client = client
        self._timeout = timeout

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import pubsub_v1  # type: ignore[attr-defined]

            from adapters.credentials import google_credentials

            with google_credentials("Pub/Sub (PUBLISHER__PROJECT)"):
                self._client = pubsub_v1.PublisherClient()
        return self._client

    def publish(self, message: OutgoingMessage) -> str:
        from google.api_core import exceptions as gexc

        data, attributes = message.encoded()
        try:
            future = self.client.publish(self.topic_path, data, **attributes)
            return str(future.result(timeout=self._timeout))
        except (gexc.NotFound, gexc.PermissionDenied, gexc.InvalidArgument) as exc:
            raise PermanentError(f"Pub/Sub publish to {self.topic_path} refused: {exc.message}") from exc
        except Exception as exc:
            raise TransientError(f"Pub/Sub publish to {self.topic_path} failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()
