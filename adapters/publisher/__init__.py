"""Publisher adapters: an in-process local bus, or Google Cloud Pub/Sub."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.publisher.base import Publisher
    from config.settings import Settings


def build_publisher(settings: Settings) -> Publisher:
    if settings.publisher.kind == "pubsub":
        from adapters.publisher.pubsub import PubSubPublisher

        if not settings.publisher.project:
            from errors import ConfigError

            raise ConfigError("publisher.project (env PUBLISHER__PROJECT) is required for Pub/Sub")
        return PubSubPublisher(project=settings.publisher.project, topic=settings.publisher.topic)
    from adapters.publisher.local import LocalBus

    return LocalBus()
