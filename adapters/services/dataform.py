"""Dataform adapter: compile a repository, start a workflow invocation, poll its state.

Talks to the Dataform v1beta1 API through google-cloud-dataform (REST transport). The library's
own retries are disabled: every vendor error is translated here into `PermanentError` or
`TransientError` and the task engine decides when to try again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from errors import ConfigError, PermanentError, TransientError, is_transient_http_status, retry_after_seconds

if TYPE_CHECKING:
    from google.cloud import dataform_v1beta1

log = logging.getLogger("caf.adapters.dataform")

_TIMEOUT_SECONDS = 60.0
_DONE_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"})


@dataclass(frozen=True)
class DataformTarget:
    """One `repo` row: which Dataform repository to compile and what to run."""

    project: str
    location: str
    repository: str
    git_commitish: str | None = None
    workspace: str | None = None
    release_config: str | None = None
    included_tags: tuple[str, ...] = ()
    included_targets: tuple[str, ...] = ()
    """Actions to run, as "database.schema.name" or "schema.name"."""
    transitive_dependencies: bool = False
    transitive_dependents: bool = False
    full_refresh: bool = False
    compilation_vars: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None

    @property
    def parent(self) -> str:
        """The repository's resource name."""
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"


@dataclass(frozen=True)
class InvocationState:
    """A workflow invocation as last seen; `failed_actions` is filled when the state is FAILED."""

    name: str
    state: str
    failed_actions: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """True once the invocation can no longer change state."""
        return self.state in _DONE_STATES


class DataformClient:
    """Compiles Dataform repositories and runs workflow invocations.

    Args:
        api_endpoint: Base URL of the API (e.g. a loopback fake); None for the production default.
        credentials: google-auth credentials; None for Application Default Credentials.
    """

    def __init__(self, *, api_endpoint: str | None = None, credentials: Any = None) -> None:
        self._api_endpoint = api_endpoint
        self._credentials = credentials
        self._client: dataform_v1beta1.DataformClient | None = None

    def compile(self, target: DataformTarget) -> str:
        """Create a compilation result for the target's release config, commitish or workspace.

        Returns:
            The compilation result's resource name.

        Raises:
            PermanentError: the project does not compile (each error's message and path listed).
        """
        from google.cloud import dataform_v1beta1

        result = dataform_v1beta1.CompilationResult(**_compilation_source(target))
        if target.compilation_vars:
            result.code_compilation_config = dataform_v1beta1.CodeCompilationConfig(
                vars=dict(target.compilation_vars)
            )
        with _translated("compile", target.parent):
            created = self._api().create_compilation_result(
                parent=target.parent, compilation_result=result, retry=None, timeout=_TIMEOUT_SECONDS
            )
        if created.compilation_errors:
            details = "; ".join(
                f"{error.message} (at {error.path or '?'})" for error in created.compilation_errors
            )
            raise PermanentError(f"Dataform compilation of {target.parent} failed: {details}")
        log.info("compiled %s into %s", target.parent, created.name)
        return created.name

    def invoke(self, target: DataformTarget, compilation_result: str) -> str:
        """Start a workflow invocation of `compilation_result` with the target's invocation config.

        Returns:
            The workflow invocation's resource name.
        """
        from google.cloud import dataform_v1beta1

        config = dataform_v1beta1.InvocationConfig(
            included_tags=list(target.included_tags),
            included_targets=[_parse_target(text) for text in target.included_targets],
            transitive_dependencies_included=target.transitive_dependencies,
            transitive_dependents_included=target.transitive_dependents,
            fully_refresh_incremental_tables_enabled=target.full_refresh,
            service_account=target.service_account or "",
        )
        invocation = dataform_v1beta1.WorkflowInvocation(
            compilation_result=compilation_result, invocation_config=config
        )
        with _translated("invoke", compilation_result):
            created = self._api().create_workflow_invocation(
                parent=target.parent, workflow_invocation=invocation, retry=None, timeout=_TIMEOUT_SECONDS
            )
        log.info("started workflow invocation %s", created.name)
        return created.name

    def find_invocation(self, target: DataformTarget, compilation_result: str) -> str | None:
        """The workflow invocation of `compilation_result` in the target's repository, if one exists.

        Used when an earlier `invoke` may have been carried out although its reply was lost.
        The list's `filter` syntax is not documented, so every page is read and matched here on
        the invocation's compilation result (a compilation result is unique to one CAF run).
        """
        from google.cloud import dataform_v1beta1

        request = dataform_v1beta1.ListWorkflowInvocationsRequest(parent=target.parent, page_size=200)
        with _translated("list invocations", target.parent):
            for invocation in self._api().list_workflow_invocations(
                request=request, retry=None, timeout=_TIMEOUT_SECONDS
            ):  # iterating fetches further pages, so stay inside _translated
                if compilation_result in (invocation.compilation_result, invocation.resolved_compilation_result):
                    log.info("found workflow invocation %s of %s", invocation.name, compilation_result)
                    return invocation.name
        return None

    def start(self, target: DataformTarget) -> str:
        """Compile the target and start a workflow invocation; returns the invocation name."""
        return self.invoke(target, self.compile(target))

    def get_state(self, invocation_name: str) -> InvocationState:
        """Read an invocation's state; when it FAILED, also collect its failed actions and reasons."""
        with _translated("get invocation", invocation_name):
            invocation = self._api().get_workflow_invocation(
                name=invocation_name, retry=None, timeout=_TIMEOUT_SECONDS
            )
        state = invocation.state.name
        failed = self._failed_actions(invocation_name) if state == "FAILED" else []
        return InvocationState(name=invocation.name or invocation_name, state=state, failed_actions=failed)

    def _failed_actions(self, invocation_name: str) -> list[dict]:
        with _translated("query invocation actions", invocation_name):
            pages = self._api().query_workflow_invocation_actions(
                request={"name": invocation_name}, retry=None, timeout=_TIMEOUT_SECONDS
            )
            return [
                {
                    "target": _format_target(action.target),
                    "state": action.state.name,
                    "failure_reason": action.failure_reason,
                }
                for action in pages  # iterating fetches further pages, so stay inside _translated
                if action.state.name == "FAILED"
            ]

    def _api(self) -> dataform_v1beta1.DataformClient:
        # Built on first use so that importing this module (and cold starts) stay cheap.
        if self._client is None:
            from google.cloud import dataform_v1beta1

            options = {"api_endpoint": self._api_endpoint} if self._api_endpoint else None
            with _translated("connect", self._api_endpoint or "dataform.googleapis.com"):
                self._client = dataform_v1beta1.DataformClient(
                    transport="rest", client_options=options, credentials=self._credentials
                )
        return self._client


def _compilation_source(target: DataformTarget) -> dict[str, str]:
    """The `source` oneof of a compilation result: release config, else commitish, else workspace."""
    if target.release_config:
        return {"release_config": _qualified(target, "releaseConfigs", target.release_config)}
    if target.git_commitish:
        return {"git_commitish": target.git_commitish}
    if target.workspace:
        return {"workspace": _qualified(target, "workspaces", target.workspace)}
    raise ConfigError(
        f"Dataform repository {target.parent}: set one of release_config, git_commitish or workspace"
    )


def _qualified(target: DataformTarget, collection: str, name: str) -> str:
    """Accept a short id or a full resource name for release configs and workspaces."""
    return name if "/" in name else f"{target.parent}/{collection}/{name}"


def _parse_target(text: str) -> Any:
    """ "db.schema.name" or "schema.name" as a Dataform `Target`."""
    from google.cloud import dataform_v1beta1

    parts = text.split(".")
    if len(parts) == 2 and all(parts):
        return dataform_v1beta1.Target(schema=parts[0], name=parts[1])
    if len(parts) == 3 and all(parts):
        return dataform_v1beta1.Target(database=parts[0], schema=parts[1], name=parts[2])
    raise ConfigError(f"included_targets: {text!r} is not 'database.schema.name' or 'schema.name'")


def _format_target(target: Any) -> str:
    return ".".join(part for part in (target.database, target.schema, target.name) if part)


@contextlib.contextmanager
def _translated(action: str, resource: str) -> Iterator[None]:
    """Turn google-api-core, google-auth and requests errors into CAF's two error kinds."""
    what = f"Dataform {action} ({resource})"
    try:
        yield
    except api_exceptions.GoogleAPICallError as exc:
        status = exc.code if isinstance(exc.code, int) else None
        message = f"{what}: HTTP {status}: {exc.message}"
        if status is None or is_transient_http_status(status):
            raise TransientError(message, retry_after=_retry_after(exc.response)) from exc
        raise PermanentError(message) from exc
    except auth_exceptions.TransportError as exc:
        raise TransientError(f"{what}: cannot reach the token service: {type(exc).__name__}") from exc
    except auth_exceptions.RefreshError as exc:
        if getattr(exc, "retryable", False):
            raise TransientError(f"{what}: credential refresh failed, retryable") from exc
        raise PermanentError(f"{what}: credential refresh failed: {exc}") from exc
    except auth_exceptions.DefaultCredentialsError as exc:
        raise PermanentError(f"{what}: no usable Google credentials: {exc}") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _retry_after(response: Any) -> float | None:
    """Seconds from the response's Retry-After header, if it has one."""
    headers = getattr(response, "headers", None) if response is not None else None
    return retry_after_seconds(headers.get("Retry-After") if headers else None)
