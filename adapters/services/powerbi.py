"""Power BI adapter: start dataset refreshes and follow them, signed in as a service principal.

Tokens come from Microsoft Entra ID through MSAL's client-credentials flow; MSAL caches each
token until it expires, so one `PowerBiClient` (one MSAL app) should live per function
instance. HTTP statuses, `requests` and MSAL errors are translated here into `PermanentError`
or `TransientError`; the client secret and access tokens never appear in messages or logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msal
import requests

from errors import PermanentError, TransientError, is_transient_http_status, retry_after_seconds

log = logging.getLogger("caf.adapters.powerbi")

_DONE_STATUSES = frozenset({"Completed", "Failed", "Disabled", "Cancelled"})
# Entra ID error codes worth retrying; anything else (bad secret, unknown tenant...) is permanent.
_TRANSIENT_TOKEN_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
# Power BI keeps at most 60 history entries per dataset; ask for all of them.
_HISTORY_TOP = 60
# History `refreshType`s of refreshes started through the REST API (what CAF starts).
_API_REFRESH_TYPES = frozenset({"ViaApi", "ViaEnhancedApi"})


@dataclass(frozen=True)
class RefreshState:
    """One dataset refresh as last seen; `status` is Power BI's ("Unknown" means in progress)."""

    request_id: str
    status: str
    error: str | None
    start_time: str | None
    end_time: str | None

    @property
    def done(self) -> bool:
        """True once the refresh can no longer change status."""
        return self.status in _DONE_STATUSES


class PowerBiClient:
    """Power BI REST client for dataset refreshes.

    Args:
        tenant_id: Entra ID tenant of the service principal.
        client_id: Application (client) id of the service principal.
        client_secret: Its client secret; kept out of every message and log line.
        authority_host: Entra ID host (https only, as MSAL requires).
        api_base: Power BI REST base URL, up to and including `/myorg`.
        scope: OAuth scope requested for the API.
        session: `requests.Session` for token and API calls (e.g. one trusting a private CA).
        timeout: Seconds allowed for each HTTP call.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority_host: str = "https://login.microsoftonline.com",
        api_base: str = "https://api.powerbi.com/v1.0/myorg",
        scope: str = "https://analysis.windows.net/powerbi/api/.default",
        session: requests.Session | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._client_id = client_id
        self._secret = client_secret
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._api_base = api_base.rstrip("/")
        self._scope = scope
        self._session = session or requests.Session()
        self._timeout = timeout
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_lock = threading.Lock()

    def start_refresh(self, group_id: str, dataset_id: str, body: dict | None = None) -> str:
        """Ask Power BI to refresh a dataset.

        Args:
            group_id: Workspace id.
            dataset_id: Dataset (semantic model) id.
            body: Enhanced-refresh request body; default `{"notifyOption": "NoNotification"}`.

        Returns:
            The refresh's request id, used by `get_refresh`.
        """
        path = _refreshes_path(group_id, dataset_id)
        response = self._call("POST", path, json_body=body or {"notifyOption": "NoNotification"})
        request_id = response.headers.get("RequestId") or _last_segment(response.headers.get("Location"))
        if not request_id:
            raise PermanentError(f"Power BI POST {path}: the response carries no refresh request id")
        log.info("started Power BI refresh %s of dataset %s", request_id, dataset_id)
        return request_id

    def get_refresh(self, group_id: str, dataset_id: str, request_id: str) -> RefreshState:
        """Read a refresh's status from its execution details, else from the refresh history.

        A refresh the history does not list yet is reported as "NotStarted".
        """
        path = f"{_refreshes_path(group_id, dataset_id)}/{request_id}"
        # Execution details exist for enhanced refreshes; other refreshes answer 404 (or 400).
        response = self._call("GET", path, passthrough=(400, 404))
        if response.ok:
            return _from_execution_details(request_id, _json(response, path))
        for entry in self._history(group_id, dataset_id):
            if entry.get("requestId") == request_id:
                return _from_history(request_id, entry)
        return RefreshState(request_id, "NotStarted", None, None, None)

    def refreshes_since(self, group_id: str, dataset_id: str, since: datetime) -> int:
        """Count refresh-history entries that started at or after `since` (naive means UTC).

        Power BI keeps at most the last 60 entries (3 days), so the count is capped accordingly.
        """
        since = _as_utc(since)
        starts = (_parse_time(entry.get("startTime")) for entry in self._history(group_id, dataset_id))
        return sum(1 for start in starts if start is not None and start >= since)

    def refreshes_requested_since(self, group_id: str, dataset_id: str, since: datetime) -> list[str]:
        """Request ids of API-started refreshes (history) that started at or after `since`, oldest first.

        Used when an earlier `start_refresh` may have been carried out although its reply was lost.
        """
        since = _as_utc(since)
        found = []
        for entry in self._history(group_id, dataset_id):
            start = _parse_time(entry.get("startTime"))
            if (entry.get("refreshType") in _API_REFRESH_TYPES and entry.get("requestId")
                    and start is not None and start >= since):
                found.append((start, str(entry["requestId"])))
        return [request_id for _, request_id in sorted(found)]

    def _history(self, group_id: str, dataset_id: str) -> list[dict]:
        path = f"{_refreshes_path(group_id, dataset_id)}?$top={_HISTORY_TOP}"
        return list(_json(self._call("GET", path), path).get("value", []))

    def _call(
        self, method: str, path: str, *, json_body: dict | None = None, passthrough: tuple[int, ...] = ()
    ) -> requests.Response:
        """Send one API call; on 401 drop the cached token and try once more with a fresh one."""
        response = self._send(method, path, json_body, self._token())
        if response.status_code == 401:
            log.info("Power BI rejected the access token; retrying once with a new one")
            response = self._send(method, path, json_body, self._token(fresh=True))
        if response.ok or response.status_code in passthrough:
            return response
        raise _status_error(f"Power BI {method} {path}", response)

    def _send(self, method: str, path: str, json_body: dict | None, token: str) -> requests.Response:
        try:
            return self._session.request(
                method,
                f"{self._api_base}/{path}",
                json=json_body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise _request_error(f"Power BI {method} {path}", exc) from exc

    def _token(self, *, fresh: bool = False) -> str:
        """An access token from MSAL's cache, or a new one from Entra ID."""
        app = self._msal_app()
        if fresh:
            app.remove_tokens_for_client()
        try:
            result = app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as exc:
            raise _request_error("Entra ID token request", exc) from exc
        except (msal.exceptions.MsalServiceError, json.JSONDecodeError) as exc:  # 5xx or not JSON
            raise TransientError(f"Entra ID token request failed: {self._scrub(str(exc))}") from exc
        if "access_token" in result:
            return result["access_token"]
        error = result.get("error", "unknown_error")
        # Entra descriptions end with trace and correlation ids on further lines; keep the first.
        description = (str(result.get("error_description") or "").splitlines() or [""])[0]
        message = f"Entra ID token request failed: {error}: {self._scrub(description)}"
        if error in _TRANSIENT_TOKEN_ERRORS:
            raise TransientError(message)
        raise PermanentError(message)

    def _msal_app(self) -> msal.ConfidentialClientApplication:
        # Built on first use: the constructor already fetches the tenant's OpenID configuration.
        with self._app_lock:
            if self._app is None:
                try:
                    self._app = msal.ConfidentialClientApplication(
                        self._client_id,
                        client_credential=self._secret,
                        authority=self._authority,
                        validate_authority=False,
                        instance_discovery=False,
                        http_client=_TimeoutHttpClient(self._session, self._timeout),
                    )
                except requests.RequestException as exc:
                    raise _request_error("Entra ID discovery", exc) from exc
                except ValueError as exc:  # unknown tenant or malformed authority
                    raise PermanentError(f"Entra ID discovery failed: {self._scrub(str(exc))}") from exc
                except (msal.exceptions.MsalServiceError, RuntimeError) as exc:  # discovery 5xx
                    raise TransientError(f"Entra ID discovery failed: {self._scrub(str(exc))}") from exc
            return self._app

    def _scrub(self, text: str) -> str:
        """Defence in depth: the secret never leaves this object, even inside a vendor message."""
        return text.replace(self._secret, "***") if self._secret else text


class _TimeoutHttpClient:
    """MSAL's http_client contract (get/post/close) over our session, with our timeout applied.

    MSAL applies its own `timeout` only to sessions it builds itself.
    """

    def __init__(self, session: requests.Session, timeout: float) -> None:
        self._session = session
        self._timeout = timeout

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.post(url, **kwargs)

    def close(self) -> None:
        """The session belongs to the caller; leave it open."""


def _refreshes_path(group_id: str, dataset_id: str) -> str:
    return f"groups/{group_id}/datasets/{dataset_id}/refreshes"


def _from_execution_details(request_id: str, detail: dict) -> RefreshState:
    """A `DatasetRefreshDetail` (Get Refresh Execution Details In Group) as a RefreshState."""
    errors = [
        ": ".join(part for part in (m.get("code"), m.get("message")) if part)
        for m in detail.get("messages") or []
        if m.get("type", "Error") == "Error"
    ]
    status = detail.get("status") or "Unknown"
    error = "; ".join(e for e in errors if e) or (
        detail.get("extendedStatus") if status == "Failed" else None
    )
    return RefreshState(request_id, status, error or None, detail.get("startTime"), detail.get("endTime"))


def _from_history(request_id: str, entry: dict) -> RefreshState:
    """A `Refresh` entry (Get Refresh History In Group) as a RefreshState."""
    error = _service_exception(entry.get("serviceExceptionJson"))
    return RefreshState(
        request_id, entry.get("status") or "Unknown", error, entry.get("startTime"), entry.get("endTime")
    )


def _service_exception(raw: str | None) -> str | None:
    """`serviceExceptionJson` is a JSON document in a string; keep its code and description."""
    with contextlib.suppress(TypeError, ValueError):
        details = json.loads(raw or "")
        if isinstance(details, dict) and details.get("errorCode"):
            return ": ".join(str(details[k]) for k in ("errorCode", "errorDescription") if details.get(k))
    return raw or None


def _status_error(what: str, response: requests.Response) -> PermanentError | TransientError:
    message = f"{what}: HTTP {response.status_code}{_api_error(response)}"
    if is_transient_http_status(response.status_code):
        return TransientError(message, retry_after=_retry_after(response.headers.get("Retry-After")))
    return PermanentError(message)


def _api_error(response: requests.Response) -> str:
    """Power BI's `{"error": {"code", "message"}}`, when the body has one."""
    with contextlib.suppress(AttributeError, ValueError):
        error = response.json()["error"]
        return " " + ": ".join(str(error[k]) for k in ("code", "message") if error.get(k))
    return ""


def _request_error(what: str, exc: requests.RequestException) -> PermanentError | TransientError:
    if isinstance(
        exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
    ):
        # These name the host and the cause, never request headers.
        return TransientError(f"{what}: {type(exc).__name__}: {exc}")
    # Others (e.g. InvalidHeader) may quote a header value, which could be the bearer token.
    return PermanentError(f"{what}: {type(exc).__name__}")


def _json(response: requests.Response, path: str) -> dict:
    try:
        payload = response.json()
    except ValueError as exc:
        raise TransientError(f"Power BI GET {path}: the response is not JSON") from exc
    return payload if isinstance(payload, dict) else {}


def _last_segment(url: str | None) -> str | None:
    """The refresh id at the end of a Location header."""
    return url.rstrip("/").rsplit("/", 1)[-1] if url else None


def _retry_after(value: str | None) -> float | None:
    return retry_after_seconds(value)


def _parse_time(value: str | None) -> datetime | None:
    with contextlib.suppress(ValueError):
        return _as_utc(datetime.fromisoformat(value)) if value else None
    return None


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
