"""Typed, validated envelopes decoded from CloudEvents and Pub/Sub messages.

Decoding is cheap (standard library only) because it runs on every cold start. Anything
malformed raises `MalformedEvent`, a PermanentError: redelivering it cannot help.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from errors import PermanentError

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
MAX_OBJECT_NAME_BYTES = 1024  # GCS limit


class MalformedEvent(PermanentError):
    """The envelope cannot be decoded into a message CAF understands."""


@dataclass(frozen=True)
class ObjectRef:
    """One object version: the unit of ingestion and of idempotency."""

    bucket: str
    name: str
    generation: int
    size: int | None = None
    md5: str | None = None
    crc32c: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    event_id: str | None = None
    event_time: datetime | None = None

    @property
    def is_folder_placeholder(self) -> bool:
        return self.name.endswith("/")

    @classmethod
    def from_storage_data(
        cls, data: Any, *, event_id: str | None = None, event_time: datetime | None = None
    ) -> ObjectRef:
        """Decode the GCS object resource of a finalize event (JSON API shape)."""
        if isinstance(data, bytes | str):
            data = _json(data, "storage event data")
        if not isinstance(data, dict):
            raise MalformedEvent("storage event data is not a JSON object")
        return cls.build(
            bucket=data.get("bucket"),
            name=data.get("name"),
            generation=data.get("generation"),
            size=data.get("size"),
            md5=data.get("md5Hash"),
            crc32c=data.get("crc32c"),
            content_type=data.get("contentType"),
            content_encoding=data.get("contentEncoding"),
            event_id=event_id,
            event_time=event_time,
        )

    @classmethod
    def build(cls, *, bucket: Any, name: Any, generation: Any, size: Any = None, **extra: Any) -> ObjectRef:
        if not isinstance(bucket, str) or not bucket:
            raise MalformedEvent("storage event has no bucket")
        if not isinstance(name, str) or not name:
            raise MalformedEvent("storage event has no object name")
        if "\x00" in name or len(name.encode("utf-8", "surrogatepass")) > MAX_OBJECT_NAME_BYTES:
            raise MalformedEvent(f"object name is not a valid GCS name: {name[:80]!r}")
        return cls(bucket=bucket, name=name, generation=_int(generation, "generation"),
                   size=None if size in (None, "") else _int(size, "size"), **extra)

    def labels(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "object": self.name, "generation": self.generation}


@dataclass(frozen=True)
class PubSubMessage:
    """A decoded Pub/Sub message: JSON (or raw) data plus string attributes."""

    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None
    publish_time: datetime | None = None

    def json(self) -> dict[str, Any]:
        value = _json(self.data, "Pub/Sub message data") if self.data else {}
        if not isinstance(value, dict):
            raise MalformedEvent("Pub/Sub message data is not a JSON object")
        return value

    @classmethod
    def from_push_body(cls, body: Any) -> PubSubMessage:
        """Decode `{"message": {"data": base64, "attributes": {...}, "messageId": ...}}`."""
        if isinstance(body, bytes | str):
            body = _json(body, "Pub/Sub envelope")
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise MalformedEvent("Pub/Sub envelope has no 'message' object")
        msg = body["message"]
        raw = msg.get("data") or ""
        if not isinstance(raw, str):
            raise MalformedEvent("Pub/Sub message data is not a base64 string")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedEvent(f"Pub/Sub message data is not valid base64: {exc}") from None
        attributes = msg.get("attributes") or {}
        if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
            raise MalformedEvent("Pub/Sub message attributes must be a map of strings")
        return cls(
            data=data,
            attributes=dict(attributes),
            message_id=msg.get("messageId") or msg.get("message_id"),
            publish_time=parse_time(msg.get("publishTime") or msg.get("publish_time")),
        )

    def to_push_body(self) -> dict[str, Any]:
        """The inverse of from_push_body (used by the local bus and tests)."""
        message: dict[str, Any] = {"data": base64.b64encode(self.data).decode(), "attributes": self.attributes}
        if self.message_id:
            message["messageId"] = self.message_id
        if self.publish_time:
            message["publishTime"] = self.publish_time.isoformat()
        return {"message": message, "subscription": "projects/local/subscriptions/caf"}

    def object_ref(self) -> ObjectRef:
        """A GCS Pub/Sub notification (`eventType=OBJECT_FINALIZE`) as an ObjectRef."""
        attrs = self.attributes
        data: dict[str, Any] = {}
        if self.data:
            try:
                parsed = json.loads(self.data)
                data = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                data = {}
        return ObjectRef.build(
            bucket=attrs.get("bucketId") or data.get("bucket"),
            name=attrs.get("objectId") or data.get("name"),
            generation=attrs.get("objectGeneration") or data.get("generation"),
            size=data.get("size"),
            md5=data.get("md5Hash"),
            crc32c=data.get("crc32c"),
            content_type=data.get("contentType"),
            content_encoding=data.get("contentEncoding"),
            event_id=self.message_id,
            event_time=self.publish_time,
        )


def _json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"{what} is not valid JSON: {exc}") from None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise MalformedEvent(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value)
    else:
        raise MalformedEvent(f"{what} must be an integer (number or numeric string), got {value!r}")
    if result < 0 or result >= 2**63:
        raise MalformedEvent(f"{what} out of range: {value!r}")
    return result


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
