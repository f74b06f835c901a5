"""A loopback Dataform v1beta1 REST server: the four calls CAF makes, in their documented JSON shapes.

Implements compilationResults.create, workflowInvocations.create / get / query. It records every
request (so tests assert on what went over the wire) and is steered per test: compilation errors,
the outcome of invocations, failing actions, and canned HTTP errors served before normal answers.
State changes follow call counts, never the clock. `lose_replies` makes a call take effect and
then drops the connection, as when a reply is lost on the way back.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.adapters.services.loopback import LoopbackServer
from tests.adapters.services.loopback import serve as serve_loopback

_REPO = r"projects/[^/]+/locations/[^/]+/repositories/[^/:]+"
_ROUTES = [
    ("POST", re.compile(rf"^/v1beta1/(?P<parent>{_REPO})/compilationResults$"), "_create_compilation"),
    ("POST", re.compile(rf"^/v1beta1/(?P<parent>{_REPO})/workflowInvocations$"), "_create_invocation"),
    ("GET", re.compile(rf"^/v1beta1/(?P<parent>{_REPO})/workflowInvocations$"), "_list_invocations"),
    ("GET", re.compile(rf"^/v1beta1/(?P<name>{_REPO}/workflowInvocations/[^/:]+)$"), "_get_invocation"),
    ("GET", re.compile(rf"^/v1beta1/(?P<name>{_REPO}/workflowInvocations/[^/:]+):query$"), "_query_actions"),
]
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# Enum numbers, for clients asking `$alt=json;enum-encoding=int` (the GAPIC REST transport does).
_INVOCATION_STATES = {"RUNNING": 1, "SUCCEEDED": 2, "CANCELLED": 3, "FAILED": 4, "CANCELING": 5}
_ACTION_STATES = {
    "PENDING": 0,
    "RUNNING": 1,
    "SKIPPED": 2,
    "DISABLED": 3,
    "SUCCEEDED": 4,
    "CANCELLED": 5,
    "FAILED": 6,
}
_PAGE_SIZE = 2  # small, so that clients must follow nextPageToken


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None


@dataclass
class FakeDataform:
    """Server state and knobs; `url` is set once started."""

    repositories: set[str] = field(default_factory=lambda: {"projects/p/locations/l/repositories/r"})
    compilation_errors: list[dict] = field(default_factory=list)
    outcome: str = "SUCCEEDED"
    running_polls: int = 1
    """How many `get` calls see RUNNING before `outcome`."""
    actions: list[dict] = field(default_factory=list)
    """WorkflowInvocationAction JSON returned by `query` (states as names); see `action()`."""
    requests: list[Recorded] = field(default_factory=list)
    lose_replies: dict[str, int] = field(default_factory=dict)
    """Route handler name → how many of its calls are carried out and then answered by dropping
    the connection (the reply is lost), e.g. {"_create_invocation": 1}."""
    unavailable: dict[str, int] = field(default_factory=dict)
    """Route handler name → how many of its calls get 503 without any effect."""
    url: str = ""
    _errors: deque = field(default_factory=deque)
    _compilations: dict[str, dict] = field(default_factory=dict)
    _invocations: dict[str, dict] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, message: str = "injected", *, times: int = 1, **headers: str) -> None:
        """Answer the next `times` requests with an error (headers as keyword args, `_` for `-`)."""
        for _ in range(times):
            self._errors.append((status, message, {k.replace("_", "-"): v for k, v in headers.items()}))

    def bodies(self, suffix: str) -> list[dict]:
        """Bodies of the recorded POSTs whose path ends with `suffix`."""
        return [r.body or {} for r in self.requests if r.method == "POST" and r.path.endswith(suffix)]

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: dict | None) -> tuple:
        """Route one request; returns (status, headers, JSON payload)."""
        with self._lock:
            self.requests.append(Recorded(method, path, query, body))
            if self._errors:
                status, message, headers = self._errors.popleft()
                return status, headers, _envelope(status, message)
            for verb, pattern, handler in _ROUTES:
                match = pattern.match(path)
                if verb == method and match:
                    if self.unavailable.get(handler):
                        self.unavailable[handler] -= 1
                        return 503, {}, _envelope(503, "injected: the service did nothing")
                    status, payload = getattr(self, handler)(body or {}, query, **match.groupdict())
                    if self.lose_replies.get(handler):
                        self.lose_replies[handler] -= 1
                        return None, {}, None  # acted, but the client never hears about it
                    if status == 200 and "enum-encoding=int" in ";".join(query.get("$alt", [])):
                        payload = _ints_for_enums(payload)
                    return status, {}, payload
            return 404, {}, _envelope(404, f"no route for {method} {path}")

    def _create_compilation(self, body: dict, query: dict, parent: str) -> tuple[int, dict]:
        if parent not in self.repositories:
            return _fail(404, f"Repository {parent} not found")
        sources = [key for key in ("gitCommitish", "workspace", "releaseConfig") if body.get(key)]
        if len(sources) != 1:
            return _fail(400, "exactly one of gitCommitish, workspace, releaseConfig is required")
        if body.get("releaseConfig", parent).split("/releaseConfigs/")[0] != parent:
            return _fail(400, "releaseConfig must belong to the repository")
        name = f"{parent}/compilationResults/c{next(self._ids)}"
        result = {**body, "name": name, "resolvedGitCommitSha": "0a1b2c3", "dataformCoreVersion": "3.0.0"}
        if self.compilation_errors:
            result["compilationErrors"] = list(self.compilation_errors)
        self._compilations[name] = result
        return 200, result

    def _create_invocation(self, body: dict, query: dict, parent: str) -> tuple[int, dict]:
        if parent not in self.repositories:
            return _fail(404, f"Repository {parent} not found")
        if body.get("compilationResult") not in self._compilations:
            return _fail(400, f"unknown compilation result {body.get('compilationResult')!r}")
        name = f"{parent}/workflowInvocations/i{next(self._ids)}"
        invocation = {
            **body,
            "name": name,
            "state": "RUNNING",
            "resolvedCompilationResult": body["compilationResult"],
        }
        self._invocations[name] = {"json": invocation, "polls": 0}
        return 200, invocation

    def _list_invocations(self, body: dict, query: dict, parent: str) -> tuple[int, dict]:
        mine = [r["json"] for name, r in self._invocations.items() if name.startswith(f"{parent}/")]
        start = int(query.get("pageToken", ["0"])[0])
        payload: dict[str, Any] = {"workflowInvocations": mine[start : start + _PAGE_SIZE]}
        if start + _PAGE_SIZE < len(mine):
            payload["nextPageToken"] = str(start + _PAGE_SIZE)
        return 200, payload

    def _get_invocation(self, body: dict, query: dict, name: str) -> tuple[int, dict]:
        record = self._invocations.get(name)
        if record is None:
            return _fail(404, f"Workflow invocation {name} not found")
        record["polls"] += 1
        state = "RUNNING" if record["polls"] <= self.running_polls else self.outcome
        record["json"] = {**record["json"], "state": state}
        return 200, record["json"]

    def _query_actions(self, body: dict, query: dict, name: str) -> tuple[int, dict]:
        if name not in self._invocations:
            return _fail(404, f"Workflow invocation {name} not found")
        start = int(query.get("pageToken", ["0"])[0])
        page = self.actions[start : start + _PAGE_SIZE]
        payload: dict[str, Any] = {"workflowInvocationActions": page}
        if start + _PAGE_SIZE < len(self.actions):
            payload["nextPageToken"] = str(start + _PAGE_SIZE)
        return 200, payload


def action(target: str, state: str, failure_reason: str = "") -> dict:
    """A WorkflowInvocationAction in its REST shape, for `FakeDataform.actions`."""
    parts = target.split(".")
    keys = ("database", "schema", "name")[-len(parts) :]
    result: dict[str, Any] = {"target": dict(zip(keys, parts, strict=True)), "state": state}
    result["canonicalTarget"] = result["target"]
    if failure_reason:
        result["failureReason"] = failure_reason
    return result


def _envelope(status: int, message: str) -> dict:
    """Google's JSON error envelope."""
    return {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}


def _fail(status: int, message: str) -> tuple[int, dict]:
    return status, _envelope(status, message)


def _ints_for_enums(payload: dict) -> dict:
    result = dict(payload)
    if "state" in result:
        result["state"] = _INVOCATION_STATES[result["state"]]
    if "workflowInvocations" in result:
        result["workflowInvocations"] = [_ints_for_enums(i) for i in result["workflowInvocations"]]
    if "workflowInvocationActions" in result:
        result["workflowInvocationActions"] = [
            {**a, "state": _ACTION_STATES[a["state"]]} for a in result["workflowInvocationActions"]
        ]
    return result


def serve(fake: FakeDataform) -> LoopbackServer:
    """Start `fake` on a free loopback port (sets `fake.url`); call `shutdown()` + `server_close()`."""

    def answer(method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple:
        url = urlsplit(path)
        return fake.handle(method, unquote(url.path), parse_qs(url.query), json.loads(raw) if raw else None)

    server, fake.url = serve_loopback(answer, name="fake-dataform")
    return server
