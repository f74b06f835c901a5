"""Chat webhooks: a card in Google Chat's or Slack's JSON shape, posted with one HTTP call.

The shape is chosen by the webhook's host: `chat.googleapis.com` gets a Google Chat message
(`text` plus a `cardsV2` card), anything else (`hooks.slack.com`, Mattermost, ...) gets Slack's
`text` + `blocks`. Webhook URLs embed their credentials (key and token in the query or path), so
no URL ever appears in an error message or log line here: only its scheme and host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from errors import PermanentError, TransientError, is_transient_http_status

GOOGLE_CHAT_HOSTS = ("chat.googleapis.com",)
_SLACK_HEADER_MAX = 150
_SLACK_FIELDS_MAX = 10  # a Slack section holds at most 10 fields
_FIELD_TEXT_MAX = 1900


@dataclass(frozen=True)
class Card:
    """What an alert says: a title, an optional subtitle and label → value fields (no row data)."""

    title: str
    fields: dict[str, str]
    subtitle: str | None = None
    kind: str = "alert"


def host_label(url: str) -> str:
    """`https://host` of a webhook URL: safe to log (the path and query carry its secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def is_google_chat(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in GOOGLE_CHAT_HOSTS


def google_chat_message(card: Card) -> dict[str, Any]:
    """A Google Chat webhook message: fallback `text` and one `cardsV2` card."""
    widgets = [{"decoratedText": {"topLabel": label, "text": _clip(value), "wrapText": True}}
               for label, value in card.fields.items()]
    header: dict[str, Any] = {"title": _clip(card.title, 200)}
    if card.subtitle:
        header["subtitle"] = _clip(card.subtitle, 200)
    return {
        "text": card.title,
        "cardsV2": [{"cardId": f"caf-{card.kind}", "card": {"header": header, "sections": [{"widgets": widgets}]}}],
    }


def slack_message(card: Card) -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback `text` and Block Kit `blocks`."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(card.title, _SLACK_HEADER_MAX)}}]
    if card.subtitle:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(card.subtitle)}]})
    items = list(card.fields.items())
    for start in range(0, len(items), _SLACK_FIELDS_MAX):
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{label}*\n{_clip(value)}"} for label, value in
            items[start:start + _SLACK_FIELDS_MAX]]})
    return {"text": card.title, "blocks": blocks}


def message_for(url: str, card: Card) -> dict[str, Any]:
    return google_chat_message(card) if is_google_chat(url) else slack_message(card)


def post(url: str, card: Card, *, timeout: float = 5.0, session: requests.Session | None = None) -> None:
    """Post `card` to one webhook; raises TransientError / PermanentError naming only the host."""
    if not url.startswith(("https://", "http://")):
        raise PermanentError("alert webhook is not an http(s) URL")
    http = session or requests
    try:
        response = http.post(url, json=message_for(url, card), timeout=timeout)
    except requests.RequestException as exc:
        raise TransientError(f"alert webhook {host_label(url)} unreachable: {type(exc).__name__}") from None
    if response.status_code >= 300:
        message = f"alert webhook {host_label(url)} answered HTTP {response.status_code}"
        if is_transient_http_status(response.status_code):
            raise TransientError(message)
        raise PermanentError(message)


def _clip(value: str, limit: int = _FIELD_TEXT_MAX) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
