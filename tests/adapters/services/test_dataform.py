"""DataformClient against a loopback Dataform REST server, through google-cloud-dataform's REST transport."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials

from adapters.services.dataform import DataformClient, DataformTarget
from errors import PermanentError, TransientError

from .fake_dataform import FakeDataform, action, serve

REPO = "projects/p/locations/l/repositories/r"


@pytest.fixture
def fake() -> Iterator[FakeDataform]:
    fake = FakeDataform()
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(fake: FakeDataform) -> DataformClient:
    return DataformClient(api_endpoint=fake.url, credentials=AnonymousCredentials())


def target(**overrides: object) -> DataformTarget:
    values: dict = {"project": "p", "location": "l", "repository": "r", "git_commitish": "main"}
    return DataformTarget(**{**values, **overrides})


def test_start_compiles_invokes_and_polls_until_succeeded(client: DataformClient, fake: FakeDataform) -> None:
    fake.running_polls = 2

    name = client.start(target())

    assert name.startswith(f"{REPO}/workflowInvocations/")
    states = [client.get_state(name) for _ in range(3)]
    assert [s.state for s in states] == ["RUNNING", "RUNNING", "SUCCEEDED"]
    assert [s.done for s in states] == [False, False, True]
    assert states[-1].failed_actions == []
    assert states[-1].name == name


def test_request_bodies_carry_source_vars_and_invocation_config(
    client: DataformClient, fake: FakeDataform
) -> None:
    row = target(
        included_tags=("daily", "finance"),
        included_targets=("analytics.sales.orders", "staging.customers"),
        transitive_dependencies=True,
        full_refresh=True,
        compilation_vars={"env": "test", "run_date": "2024-05-01"},
        service_account="dataform@p.iam.gserviceaccount.com",
    )

    client.start(row)

    assert fake.bodies("/compilationResults") == [
        {"gitCommitish": "main", "codeCompilationConfig": {"vars": {"env": "test", "run_date": "2024-05-01"}}}
    ]
    [invocation] = fake.bodies("/workflowInvocations")
    assert invocation["compilationResult"].startswith(f"{REPO}/compilationResults/")
    assert invocation["invocationConfig"] == {
        "includedTags": ["daily", "finance"],
        "includedTargets": [
            {"database": "analytics", "schema": "sales", "name": "orders"},
            {"schema": "staging", "name": "customers"},
        ],
        "transitiveDependenciesIncluded": True,
        "fullyRefreshIncrementalTablesEnabled": True,
        "serviceAccount": "dataform@p.iam.gserviceaccount.com",
    }


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"release_config": "nightly"}, {"releaseConfig": f"{REPO}/releaseConfigs/nightly"}),
        ({"release_config": f"{REPO}/releaseConfigs/x"}, {"releaseConfig": f"{REPO}/releaseConfigs/x"}),
        ({"git_commitish": None, "workspace": "dev"}, {"workspace": f"{REPO}/workspaces/dev"}),
        ({"git_commitish": "v1.2.0"}, {"gitCommitish": "v1.2.0"}),
    ],
)
def test_compile_sends_one_source_release_config_first(
    client: DataformClient, fake: FakeDataform, overrides: dict, expected: dict
) -> None:
    name = client.compile(target(**overrides))

    assert name.startswith(f"{REPO}/compilationResults/")
    assert fake.bodies("/compilationResults") == [expected]


def test_target_without_source_is_a_config_error(client: DataformClient, fake: FakeDataform) -> None:
    with pytest.raises(PermanentError, match="release_config, git_commitish or workspace"):
        client.compile(target(git_commitish=None))
    assert fake.requests == []


def test_malformed_included_target_is_permanent(client: DataformClient) -> None:
    with pytest.raises(PermanentError, match="'orders'"):
        client.start(target(included_targets=("orders",)))


def test_compilation_errors_are_permanent_and_listed(client: DataformClient, fake: FakeDataform) -> None:
    fake.compilation_errors = [
        {"message": "Unexpected token )", "path": "definitions/orders.sqlx", "stack": "SyntaxError..."},
        {"message": 'Missing dependency "customers"', "path": "definitions/sales.sqlx"},
    ]

    with pytest.raises(PermanentError) as raised:
        client.start(target())

    text = str(raised.value)
    assert "Unexpected token )" in text and "definitions/orders.sqlx" in text
    assert 'Missing dependency "customers"' in text and "definitions/sales.sqlx" in text
    assert fake.bodies("/workflowInvocations") == []  # nothing was run


def test_failed_invocation_reports_failed_actions_across_pages(
    client: DataformClient, fake: FakeDataform
) -> None:
    fake.outcome = "FAILED"
    fake.actions = [
        action("analytics.sales.orders", "FAILED", "Syntax error: Unexpected keyword FROM at [3:1]"),
        action("analytics.sales.customers", "SUCCEEDED"),
        action("staging.refunds", "SKIPPED"),
        action("analytics.sales.totals", "FAILED", "Access Denied: Table analytics:sales.totals"),
    ]
    name = client.start(target())
    assert client.get_state(name).state == "RUNNING"

    state = client.get_state(name)

    assert state.state == "FAILED" and state.done
    assert state.failed_actions == [
        {
            "target": "analytics.sales.orders",
            "state": "FAILED",
            "failure_reason": "Syntax error: Unexpected keyword FROM at [3:1]",
        },
        {
            "target": "analytics.sales.totals",
            "state": "FAILED",
            "failure_reason": "Access Denied: Table analytics:sales.totals",
        },
    ]
    queries = [r for r in fake.requests if r.path.endswith(":query")]
    assert len(queries) == 2  # the second page was fetched


def test_server_error_is_transient_and_the_next_attempt_succeeds(
    client: DataformClient, fake: FakeDataform
) -> None:
    fake.fail_next(503, "The service is currently unavailable.")

    with pytest.raises(TransientError, match="503") as raised:
        client.start(target())
    assert raised.value.retry_after is None

    assert client.start(target()).startswith(f"{REPO}/workflowInvocations/")


def test_throttling_is_transient_with_retry_after(client: DataformClient, fake: FakeDataform) -> None:
    name = client.start(target())
    fake.fail_next(429, "Quota exceeded", Retry_After="30")

    with pytest.raises(TransientError) as raised:
        client.get_state(name)

    assert raised.value.retry_after == 30.0


def test_unknown_repository_is_permanent(client: DataformClient) -> None:
    with pytest.raises(PermanentError, match="404") as raised:
        client.start(target(repository="missing"))
    assert not isinstance(raised.value, TransientError)


def test_unknown_invocation_is_permanent(client: DataformClient) -> None:
    with pytest.raises(PermanentError, match="404"):
        client.get_state(f"{REPO}/workflowInvocations/nope")


def test_unreachable_endpoint_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = DataformClient(api_endpoint=f"http://127.0.0.1:{port}", credentials=AnonymousCredentials())

    with pytest.raises(TransientError, match="ConnectionError"):
        client.compile(target())
