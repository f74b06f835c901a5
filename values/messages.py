"""Messages in and out: envelopes decoded from CloudEvents / Pub/Sub, and CAF's own outgoing events.

Decoding is cheap (standard library only) because it runs on every cold start. Anything
malformed raises `MalformedEvent`, a PermanentError: redelivering it cannot help.
`ObjectRef` (one object version) travels through every layer; `OutgoingMessage` is what the
outbox records and the publisher port sends.
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
MAX_BUCKET_NAME_BYTES = 222  # GCS limit (and the width of files.bucket)
# Optional metadata: longest value kept (the width of its `files` column). Checksums longer than
# this are not checksums (malformed); free-text fields are cut, as they only inform.
_CHECKSUM_BYTES = {"md5": 64, "crc32c": 16}
_TEXT_BYTES = {"content_type": 255, "content_encoding": 64, "event_id": 255}
_SHOWN = 80  # characters of a hostile value quoted in an error message
EVENT_TYPES = ("task", "dataform", "powerbi", "file_loaded")


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
        """Validate every field: whatever passes can be stored, logged and used as a path safely.

        GCS names are valid UTF-8 without CR, LF or NUL; a value that is not (a lone surrogate
        from a JSON escape, a NUL) or that does not fit its column is malformed, not transient.
        """
        if not isinstance(bucket, str) or not bucket:
            raise MalformedEvent("storage event has no bucket")
        if not isinstance(name, str) or not name:
            raise MalformedEvent("storage event has no object name")
        if not _clean(bucket) or len(bucket.encode()) > MAX_BUCKET_NAME_BYTES:
            raise MalformedEvent(f"bucket name is not a valid GCS bucket name: {_show(bucket)}")
        if not _clean(name) or len(name.encode()) > MAX_OBJECT_NAME_BYTES or name in (".", ".."):
            raise MalformedEvent(f"object name is not a valid GCS name: {_show(name)}")
        for key, limit in _CHECKSUM_BYTES.items():
            value = _optional_text(extra.get(key), key)
            if value is not None and len(value.encode()) > limit:
                raise MalformedEvent(f"{key} is not a checksum: {_show(value)}")
            extra[key] = value
        for key, limit in _TEXT_BYTES.items():
            value = _optional_text(extra.get(key), key)
            extra[key] = None if value is None else value.encode()[:limit].decode("utf-8", "ignore")
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
    origin: str | None = None
    """Where the message came from: the push body's subscription, else the CloudEvent source (topic)."""

    @property
    def delivery_key(self) -> str | None:
        """Identifies one published message across redeliveries, scoped so that it cannot collide:
        message ids are unique only per topic, and an emulator restarts them at "1"."""
        if not self.message_id:
            return None
        when = self.publish_time.isoformat() if self.publish_time else ""
        return f"{self.origin or ''}|{self.message_id}|{when}"

    def json(self) -> dict[str, Any]:
        value = _json(self.data, "Pub/Sub message data") if self.data else {}
        if not isinstance(value, dict):
            raise MalformedEvent("Pub/Sub message data is not a JSON object")
        return value

    @classmethod
    def from_push_body(cls, body: Any, *, source: str | None = None) -> PubSubMessage:
        """Decode `{"message": {"data": base64, "attributes": {...}, "messageId": ...}}`.

        `source` is the CloudEvent's source (the topic), used when the body names no subscription.
        """
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
        message_id = msg.get("messageId") or msg.get("message_id")
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            message_id = str(message_id)
        if message_id is not None and not isinstance(message_id, str):
            raise MalformedEvent(f"Pub/Sub messageId must be a string, got {_show(message_id)}")
        return cls(
            data=data,
            attributes=dict(attributes),
            message_id=message_id,
            publish_time=parse_time(msg.get("publishTime") or msg.get("publish_time")),
            origin=_origin(body.get("subscription"), source),
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


@dataclass(frozen=True)
class OutgoingMessage:
    """Message data is JSON; attributes carry `event_type` (the route) and string metadata."""

    event_type: str
    data: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)
    not_before: datetime | None = None
    """Earliest delivery time (retries with backoff, status checks); carried as an attribute."""

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        attrs = {**self.attributes, "event_type": self.event_type}
        if self.not_before is not None:
            attrs["not_before"] = self.not_before.isoformat()
        return json.dumps(self.data, separators=(",", ":"), default=str).encode(), attrs


def _origin(subscription: Any, source: Any) -> str | None:
    for value in (subscription, source):
        if isinstance(value, str) and value and _clean(value):
            return value[:300]
    return None


def _json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[..." nested deeper than the interpreter's stack
        raise MalformedEvent(f"{what} is nested too deeply to decode") from None


def _clean(text: str) -> bool:
    """Valid UTF-8 (no lone surrogates) without NUL, CR or LF."""
    if "\x00" in text or "\r" in text or "\n" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _clean(value):
        raise MalformedEvent(f"{what} must be a string of valid UTF-8 text, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    """A bounded, printable rendering of a (possibly huge or hostile) value for messages."""
    shown = repr(value)
    return shown if len(shown) <= _SHOWN else f"{shown[:_SHOWN]}... ({len(shown)} characters)"


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise MalformedEvent(f"{what} must be an integer, got {_show(value)}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and 0 < len(value.strip()) <= 20 and value.strip().isascii() \
            and value.strip().isdigit():  # ASCII digits only: str.isdigit() also accepts '²'
        result = int(value)
    else:
        raise MalformedEvent(f"{what} must be an integer (number or numeric string), got {_show(value)}")
    if result < 0 or result >= 2**63:
        raise MalformedEvent(f"{what} out of range: {_show(value)}")
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
