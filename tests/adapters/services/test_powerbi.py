"""PowerBiClient against a loopback HTTPS Entra ID + Power BI server, through MSAL and requests."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests

from adapters.services.powerbi import PowerBiClient
from errors import PermanentError, TransientError

from .fake_powerbi import FakePowerBi, TlsFiles, history_entry, make_tls, serve

GROUP, DATASET = "f089354e-8366-4e18-aea3-4cb4a3a50b48", "cfafbeb1-8037-4d0c-896e-a46fb27ff229"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fake(tls: TlsFiles) -> Iterator[FakePowerBi]:
    fake = FakePowerBi()
    server = serve(fake, tls)
    yield fake
    server.shutdown()
    server.server_close()


def trusting_session(ca: Path) -> requests.Session:
    session = requests.Session()
    session.verify = str(ca)
    # Otherwise REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override `verify`.
    session.trust_env = False
    return session


def make_client(fake: FakePowerBi, tls: TlsFiles, *, secret: str | None = None) -> PowerBiClient:
    return PowerBiClient(
        tenant_id=fake.tenant_id,
        client_id=fake.client_id,
        client_secret=fake.client_secret if secret is None else secret,
        authority_host=fake.url,
        api_base=f"{fake.url}/v1.0/myorg",
        session=trusting_session(tls.ca),
        timeout=5.0,
    )


@pytest.fixture
def client(fake: FakePowerBi, tls: TlsFiles) -> PowerBiClient:
    return make_client(fake, tls)


def test_refresh_runs_from_unknown_to_completed(client: PowerBiClient, fake: FakePowerBi) -> None:
    request_id = client.start_refresh(GROUP, DATASET)

    first, second = (client.get_refresh(GROUP, DATASET, request_id) for _ in range(2))

    assert (first.status, first.done, first.end_time) == ("Unknown", False, None)
    assert (second.status, second.done, second.error) == ("Completed", True, None)
    assert second.request_id == request_id
    assert second.start_time == "2024-05-01T08:00:00.000Z"
    assert second.end_time == "2024-05-01T08:01:00.000Z"
    assert fake.refresh_bodies() == [{"notifyOption": "NoNotification"}]


def test_enhanced_refresh_body_is_sent_as_given(client: PowerBiClient, fake: FakePowerBi) -> None:
    body = {"type": "Full", "commitMode": "transactional", "objects": [{"table": "Sales"}], "retryCount": 2}

    client.start_refresh(GROUP, DATASET, body)

    assert fake.refresh_bodies() == [body]


def test_failed_refresh_carries_the_error_text(client: PowerBiClient, fake: FakePowerBi) -> None:
    fake.outcome, fake.running_polls = "Failed", 0
    request_id = client.start_refresh(GROUP, DATASET)

    state = client.get_refresh(GROUP, DATASET, request_id)

    assert (state.status, state.done) == ("Failed", True)
    assert state.error == (
        "ModelRefreshFailed_CredentialsNotSpecified: The credentials provided for the SQL source are invalid."
    )


@pytest.mark.parametrize("outcome", ["Completed", "Failed"])
def test_without_execution_details_the_history_is_read(
    client: PowerBiClient, fake: FakePowerBi, outcome: str
) -> None:
    fake.enhanced, fake.outcome = False, outcome
    fake.history = [history_entry(datetime(2024, 4, 30, 6, 0, tzinfo=UTC))]
    request_id = client.start_refresh(GROUP, DATASET)

    states = [client.get_refresh(GROUP, DATASET, request_id) for _ in range(2)]

    assert [s.status for s in states] == ["Unknown", outcome]
    assert states[1].error == (
        "ModelRefreshFailed_CredentialsNotSpecified: The credentials provided for the SQL source are invalid."
        if outcome == "Failed"
        else None
    )


def test_refresh_missing_from_history_is_not_started(client: PowerBiClient, fake: FakePowerBi) -> None:
    fake.enhanced = False

    state = client.get_refresh(GROUP, DATASET, "00000000-0000-0000-0000-000000000000")

    assert (state.status, state.done) == ("NotStarted", False)


def test_request_id_is_read_from_location_when_no_request_id_header(
    client: PowerBiClient, fake: FakePowerBi
) -> None:
    fake.id_header = "Location"

    request_id = client.start_refresh(GROUP, DATASET)

    assert request_id.startswith("87f31ef7-")
    assert client.get_refresh(GROUP, DATASET, request_id).status == "Unknown"


def test_throttling_is_transient_with_retry_after(client: PowerBiClient, fake: FakePowerBi) -> None:
    fake.fail_next(429, "TooManyRequests", Retry_After="120")

    with pytest.raises(TransientError, match="429 TooManyRequests") as raised:
        client.start_refresh(GROUP, DATASET)

    assert raised.value.retry_after == 120.0


def test_retry_after_as_http_date(client: PowerBiClient, fake: FakePowerBi) -> None:
    fake.fail_next(
        429,
        "TooManyRequests",
        Retry_After=format_datetime(datetime.now(UTC) + timedelta(minutes=2), usegmt=True),
    )

    with pytest.raises(TransientError) as raised:
        client.start_refresh(GROUP, DATASET)

    assert raised.value.retry_after is not None and 90 < raised.value.retry_after <= 120


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_transient(client: PowerBiClient, fake: FakePowerBi, status: int) -> None:
    fake.fail_next(status, "InternalServerError")

    with pytest.raises(TransientError, match=str(status)) as raised:
        client.start_refresh(GROUP, DATASET)

    assert raised.value.retry_after is None
    assert client.start_refresh(GROUP, DATASET)  # the next attempt goes through


def test_bad_request_is_permanent(client: PowerBiClient, fake: FakePowerBi) -> None:
    fake.fail_next(400, "InvalidRequest")

    with pytest.raises(PermanentError, match="400 InvalidRequest") as raised:
        client.start_refresh(GROUP, DATASET)

    assert not isinstance(raised.value, TransientError)


def test_expired_token_is_replaced_once_and_the_call_succeeds(
    client: PowerBiClient, fake: FakePowerBi
) -> None:
    request_id = client.start_refresh(GROUP, DATASET)
    fake.expire_tokens()

    state = client.get_refresh(GROUP, DATASET, request_id)

    assert state.status == "Unknown"
    assert len(fake.tokens_issued) == 2


def test_token_rejected_twice_is_permanent(client: PowerBiClient, fake: FakePowerBi) -> None:
    fake.reject_all_tokens = True

    with pytest.raises(PermanentError, match="401 TokenExpired"):
        client.start_refresh(GROUP, DATASET)

    assert len(fake.tokens_issued) == 2
    assert len(fake.refresh_bodies()) == 2  # one retry, no more


def test_token_is_cached_across_calls(client: PowerBiClient, fake: FakePowerBi) -> None:
    request_id = client.start_refresh(GROUP, DATASET)
    client.get_refresh(GROUP, DATASET, request_id)
    client.refreshes_since(GROUP, DATASET, datetime(2024, 1, 1, tzinfo=UTC))
    client.start_refresh(GROUP, DATASET)

    assert len(fake.tokens_issued) == 1


def test_token_service_outage_is_transient(client: PowerBiClient, fake: FakePowerBi) -> None:
    fake.token_outages = 1

    with pytest.raises(TransientError, match="Entra ID token request failed"):
        client.start_refresh(GROUP, DATASET)

    assert fake.refresh_bodies() == []  # no API call without a token


def test_wrong_secret_is_permanent_and_not_echoed(fake: FakePowerBi, tls: TlsFiles) -> None:
    wrong = "Wr0ng~Secret.Value_not-accepted"
    client = make_client(fake, tls, secret=wrong)

    with pytest.raises(PermanentError, match="invalid_client") as raised:
        client.start_refresh(GROUP, DATASET)

    assert wrong not in str(raised.value)
    assert fake.tokens_issued == []


def test_secret_and_tokens_never_reach_logs_or_errors(
    client: PowerBiClient, fake: FakePowerBi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[Exception] = []
    request_id = client.start_refresh(GROUP, DATASET)
    fake.expire_tokens()
    client.get_refresh(GROUP, DATASET, request_id)
    for status in (400, 429, 500):
        fake.fail_next(status, Retry_After="1")
        with pytest.raises((PermanentError, TransientError)) as raised:
            client.start_refresh(GROUP, DATASET)
        failures.append(raised.value)
    fake.reject_all_tokens = True
    with pytest.raises(PermanentError) as raised:
        client.start_refresh(GROUP, DATASET)
    failures.append(raised.value)

    secrets = [fake.client_secret, *fake.tokens_issued]
    assert len(fake.tokens_issued) == 3
    assert caplog.records, "expected DEBUG records from requests/urllib3/MSAL"
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    errors = "\n".join(f"{e!s} {e!r} {e.__cause__!s}" for e in failures)
    for secret in secrets:
        assert secret not in logged
        assert secret not in errors


def test_refreshes_since_counts_history_entries(client: PowerBiClient, fake: FakePowerBi) -> None:
    base = datetime(2024, 4, 30, 6, 0, tzinfo=UTC)
    fake.history = [history_entry(base + timedelta(hours=h)) for h in (12, 6, 0)] + [
        history_entry(base - timedelta(days=1), status="Failed")
    ]
    client.start_refresh(GROUP, DATASET)  # starts at fake.now, 2024-05-01T08:00Z

    assert client.refreshes_since(GROUP, DATASET, base) == 4
    assert client.refreshes_since(GROUP, DATASET, base + timedelta(hours=6)) == 3
    assert client.refreshes_since(GROUP, DATASET, datetime(2024, 5, 1, 8, 0)) == 1  # naive means UTC
    assert client.refreshes_since(GROUP, DATASET, datetime(2024, 5, 2, tzinfo=UTC)) == 0


def test_unreachable_authority_is_transient(tls: TlsFiles) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = PowerBiClient(
        tenant_id="t",
        client_id="c",
        client_secret="s3cret-value",
        authority_host=f"https://127.0.0.1:{port}",
        api_base=f"https://127.0.0.1:{port}/v1.0/myorg",
        session=trusting_session(tls.ca),
    )

    with pytest.raises(TransientError, match="ConnectionError") as raised:
        client.start_refresh(GROUP, DATASET)

    assert "s3cret-value" not in str(raised.value)
