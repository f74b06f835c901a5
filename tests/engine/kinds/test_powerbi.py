"""`powerbi` tasks through the engine against the loopback Entra ID + Power BI server (real MSAL client)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from adapters.services.powerbi import PowerBiClient
from app.deps import Deps, set_deps
from engine import scheduler
from tests.adapters.services.fake_powerbi import FakePowerBi, TlsFiles, history_entry, make_tls, serve
from tests.engine.conftest import define, drain, runs

GROUP, DATASET = "f089354e-8366-4e18-aea3-4cb4a3a50b48", "cfafbeb1-8037-4d0c-896e-a46fb27ff229"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fake(tls: TlsFiles, clock) -> Iterator[FakePowerBi]:
    fake = FakePowerBi(now=clock())
    server = serve(fake, tls)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def pbi_deps(deps, fake, tls) -> Iterator[Deps]:
    import requests

    session = requests.Session()
    session.verify, session.trust_env = str(tls.ca), False
    client = PowerBiClient(tenant_id=fake.tenant_id, client_id=fake.client_id, client_secret=fake.client_secret,
                           authority_host=fake.url, api_base=f"{fake.url}/v1.0/myorg", session=session, timeout=5)
    with_client = Deps(deps.settings, clock=deps.clock, engine=deps.engine, sessions=deps.sessions,
                       publisher=deps.publisher, powerbi=client)
    previous = set_deps(with_client)
    yield with_client
    set_deps(previous)


def refresh_task(limit: int = 8) -> dict:
    return {"name": "refresh", "kind": "powerbi", "powerbi": {
        "report": {"group_id": GROUP, "dataset_id": DATASET, "daily_limit": limit}, "poll_seconds": 60}}


def follow(deps, clock) -> None:
    for _ in range(3):
        drain(deps)
        clock.advance(60)
    drain(deps)


def test_refresh_is_started_once_and_followed_to_completion(pbi_deps, fake, clock) -> None:
    clock.frozen = True
    define(pbi_deps, refresh_task())
    batch_id = scheduler.start_batch(pbi_deps, name="refresh", trigger="cli")
    follow(pbi_deps, clock)
    run = runs(pbi_deps, batch_id)["refresh"]
    assert run["status"] == "SUCCESS" and run["output"]["status"] == "Completed"
    assert run["remote_id"] == run["output"]["request_id"] and len(fake.refresh_bodies()) == 1


def test_daily_limit_reached_fails_without_calling_the_remote(pbi_deps, fake, clock) -> None:
    clock.frozen = True
    midnight = clock().replace(hour=0, minute=0, second=0, microsecond=0)
    fake.history = [history_entry(midnight + timedelta(seconds=s)) for s in (1, 2)]  # two refreshes today
    define(pbi_deps, refresh_task(limit=2))
    batch_id = scheduler.start_batch(pbi_deps, name="refresh", trigger="cli")
    drain(pbi_deps)
    run = runs(pbi_deps, batch_id)["refresh"]
    assert (run["status"], run["attempt"]) == ("ERROR", 1)
    assert "daily refresh limit of 2 reached" in run["error"]
    assert run["output"]["alert"]["kind"] == "limit_reached" and fake.refresh_bodies() == []


def test_failed_refresh_is_recorded_with_the_remote_error(pbi_deps, fake, clock) -> None:
    clock.frozen = True
    fake.outcome = "Failed"
    define(pbi_deps, refresh_task())
    batch_id = scheduler.start_batch(pbi_deps, name="refresh", trigger="cli")
    follow(pbi_deps, clock)
    run = runs(pbi_deps, batch_id)["refresh"]
    assert run["status"] == "ERROR" and "credentials provided for the SQL source are invalid" in run["error"]
    assert run["output"]["alert"]["kind"] == "remote_failure"


def test_unconfigured_power_bi_fails_clearly(deps, clock) -> None:
    define(deps, refresh_task())
    batch_id = scheduler.start_batch(deps, name="refresh", trigger="cli")
    drain(deps)
    run = runs(deps, batch_id)["refresh"]
    assert run["status"] == "ERROR" and run["error"].startswith("Power BI is not configured")


def test_lost_reply_of_refresh_request_adopts_the_refresh_instead_of_refreshing_again(
        pbi_deps, fake, clock) -> None:
    """Power BI starts the refresh, then the connection drops before the 202: the retry finds the
    refresh in the history (requested after the recorded intent) and follows it."""
    clock.frozen = True
    fake.lose_replies = {"_start_refresh": 1}
    define(pbi_deps, refresh_task())
    batch_id = scheduler.start_batch(pbi_deps, name="refresh", trigger="cli")
    for _ in range(8):
        follow(pbi_deps, clock)
    run = runs(pbi_deps, batch_id)["refresh"]
    assert run["status"] == "SUCCESS", run["error"]
    assert len(fake.refresh_bodies()) == 1
    assert run["output"]["adopted"] is True and run["remote_id"] == run["output"]["request_id"]


def test_lost_reply_does_not_adopt_a_refresh_another_run_recorded(pbi_deps, fake, clock) -> None:
    """A refresh already followed by another run is not this run's: the retry refreshes once more."""
    clock.frozen = True
    define(pbi_deps, refresh_task())
    first = scheduler.start_batch(pbi_deps, name="refresh", trigger="cli")
    drain(pbi_deps)  # refresh 1 started and recorded; its first check is due in 60 s
    fake.unavailable_refreshes = 1
    second = scheduler.start_batch(pbi_deps, name="refresh", trigger="cli")
    for _ in range(8):
        follow(pbi_deps, clock)
    a, b = runs(pbi_deps, first)["refresh"], runs(pbi_deps, second)["refresh"]
    assert a["status"] == b["status"] == "SUCCESS", b["error"]
    assert a["remote_id"] != b["remote_id"] and len(fake.refresh_bodies()) == 3  # 503'd one included


def test_two_concurrent_starts_at_the_limit_make_one_refresh(pbi_deps, fake, clock) -> None:
    """Both tasks read the same history (one refresh left today); only one may take the slot."""
    import threading

    from engine import runner
    from tests.engine.conftest import task_messages

    clock.frozen = True
    fake.running_polls = 100
    ids = define(pbi_deps, refresh_task(limit=1), {**refresh_task(limit=1), "name": "refresh_too"})
    batches = [scheduler.start_batch(pbi_deps, name=n, trigger="cli") for n in ("refresh", "refresh_too")]
    barrier = threading.Barrier(2)
    real = pbi_deps.powerbi.refreshes_since

    def counted_together(*args):  # both read the history before either takes the slot
        used = real(*args)
        barrier.wait(timeout=10)
        return used

    pbi_deps.powerbi.refreshes_since = counted_together
    starts = [m.data for m in pbi_deps.publisher.published if m.event_type == "task"]
    assert {s["task_id"] for s in starts} == set(ids.values()) and task_messages(pbi_deps, ids["refresh"])
    threads = [threading.Thread(target=runner.run_message, args=(pbi_deps,), kwargs=s) for s in starts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    outcome = sorted(runs(pbi_deps, b)[n]["status"] for b, n in zip(batches, ("refresh", "refresh_too"), strict=True))
    assert outcome == ["ERROR", "PROCESSING"] and len(fake.refresh_bodies()) == 1
