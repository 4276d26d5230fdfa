"""The REST API plug-in against a real HTTP server: alone, behind the ledger, and over Kafka."""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.local_system import LedgerSink, load_system
from notice_bus.errors import ConfigError, LocalSystemRejected, LocalSystemUnavailable
from notice_bus.tracker.tables import ACK
from notice_bus.wire.model import Action
from notice_bus_rest_api import RestApi
from tests.conftest import Bus
from tests.factories import PERSON, draft, event
from tests.support.http_server import NationalApi

TOKEN = "s3cret-token"


@pytest.fixture
def api() -> Iterator[NationalApi]:
    with NationalApi(token=TOKEN) as server:
        yield server


@pytest.fixture
def rest(api: NationalApi) -> RestApi:
    return RestApi(base_url=api.url, token=TOKEN, timeout_s=2.0)


@pytest.fixture
def ledger(rest: RestApi, tmp_path: Path) -> Iterator[LedgerSink]:
    sink = LedgerSink(rest, ledger_url=f"sqlite:///{tmp_path}/ledger.db")
    yield sink
    sink.close()


def sent(api: NationalApi, notice_id: str) -> list[tuple[str, int]]:
    """What the API accepted for a notice, in order: ("notice"|"withdrawal", version)."""
    path = f"/notices/{notice_id.replace('/', '-')}"
    return [
        ("withdrawal" if r.path.endswith("/withdrawal") else "notice", r.body["version"])
        for r in api.requests
        if r.method == "PUT" and r.path.split("/withdrawal")[0] == path and r.status == 200
    ]


# --- the plug-in alone ---------------------------------------------------------------------


def test_write_then_withdraw_stores_the_bodies(api: NationalApi, rest: RestApi) -> None:
    rest.write([event("2026/7", 1, target_countries=("FR", "TH")), event("2026/8", 1)])
    assert sorted(api.notices) == ["2026/7", "2026/8"]
    body = api.notices["2026/7"]
    person = json.loads(json.dumps(PERSON.to_avro()))
    assert body == {
        **person,
        "notice_id": "2026/7",
        "version": 1,
        "status": "ACTIVE",
        "requesting_country": "RU",
        "published_at": "2026-11-23T08:00:00+00:00",
        "target_countries": ["FR", "TH"],
    }
    assert (body["name"], body["forename"]) == ("Иванов", "Алексей")
    assert body["arrest_warrants"] == [
        {"issuing_country_id": "RU", "charge": "Мошенничество", "charge_translation": "Fraud"}
    ]
    first = api.requests[0]
    assert (first.method, first.path) == ("PUT", "/notices/2026-7")
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["content-type"] == "application/json"

    rest.withdraw([event("2026/7", 2, Action.CANCEL, reason="arrested in Lyon")])
    assert api.withdrawals == {
        "2026/7": {
            "notice_id": "2026/7",
            "version": 2,
            "reason": "arrested in Lyon",
            "published_at": "2026-11-23T08:00:00+00:00",
        }
    }
    assert api.requests[-1].path == "/notices/2026-7/withdrawal"


def test_withdrawing_a_notice_the_api_never_had_is_accepted(
    api: NationalApi, rest: RestApi
) -> None:
    rest.withdraw([event("2026/9", 3, Action.CANCEL)])
    assert api.withdrawals["2026/9"]["reason"] is None
    assert api.notices == {}


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_try_later_answers_are_unavailable(api: NationalApi, rest: RestApi, status: int) -> None:
    api.fail_next(1, status)
    with pytest.raises(LocalSystemUnavailable) as raised:
        rest.write([event("2026/10")])
    assert f"{api.url}/notices/2026-10" in str(raised.value)
    assert f"HTTP {status}" in str(raised.value)
    assert isinstance(raised.value.__cause__, urllib.error.HTTPError)
    assert api.notices == {}
    rest.write([event("2026/10")])  # the same PUT, retried, goes through
    assert api.notices["2026/10"]["version"] == 1


def test_a_failure_mid_batch_stops_there(api: NationalApi, rest: RestApi) -> None:
    api.fail_next(1, 503, after=1)
    with pytest.raises(LocalSystemUnavailable):
        rest.write([event("2026/11"), event("2026/12"), event("2026/13")])
    assert sorted(api.notices) == ["2026/11"]


@pytest.mark.parametrize("status", [400, 409, 413, 415, 422])
def test_refusals_are_rejected_with_the_answer_body(
    api: NationalApi, rest: RestApi, status: int
) -> None:
    api.fail_next(1, status, body='{"error": "date_of_birth is malformed"}')
    with pytest.raises(LocalSystemRejected) as raised:
        rest.write([event("2026/14")])
    message = str(raised.value)
    assert f"HTTP {status}" in message and "date_of_birth is malformed" in message
    assert "/notices/2026-14" in message


def test_a_long_refusal_body_is_truncated(api: NationalApi, rest: RestApi) -> None:
    api.fail_next(1, 400, body="x" * 20_000)
    with pytest.raises(LocalSystemRejected) as raised:
        rest.write([event("2026/15")])
    assert "x" * 100 in str(raised.value)
    assert len(str(raised.value)) < 1000


@pytest.mark.parametrize("token", ["wrong-token", None])
def test_a_bad_token_is_an_outage_not_a_refusal(api: NationalApi, token: str | None) -> None:
    # An expired token is fixed by an operator; dead-lettering every notice meanwhile is not.
    with pytest.raises(LocalSystemUnavailable, match="HTTP 401"):
        RestApi(base_url=api.url, token=token).write([event("2026/16")])
    assert api.notices == {}
    assert api.requests[-1].headers.get("authorization") == (token and f"Bearer {token}")


def test_a_slow_answer_beyond_the_timeout_is_unavailable() -> None:
    with NationalApi(delay_s=2.0) as slow:
        rest = RestApi(base_url=slow.url, timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(LocalSystemUnavailable, match="timed out"):
            rest.write([event("2026/17")])
        assert time.monotonic() - started < 1.5
        health = rest.health()
        assert not health.ok and "timed out" in health.detail


def test_a_slow_answer_within_the_timeout_is_fine() -> None:
    with NationalApi(delay_s=0.3) as slow:
        RestApi(base_url=slow.url, timeout_s=2.0).write([event("2026/18")])
        assert slow.notices["2026/18"]["version"] == 1


def test_health_follows_the_api(api: NationalApi, rest: RestApi) -> None:
    assert rest.health().ok
    api.down("503")
    health = rest.health()
    assert not health.ok and "HTTP 503" in health.detail
    api.up()
    assert rest.health().ok
    bad_token = RestApi(base_url=api.url, token="wrong").health()
    assert not bad_token.ok and "HTTP 401" in bad_token.detail


def test_a_closed_port_is_unavailable_until_it_listens_again(
    api: NationalApi, rest: RestApi
) -> None:
    url = api.url
    api.down("closed")
    health = rest.health()
    assert not health.ok and "refused" in health.detail.lower()
    with pytest.raises(LocalSystemUnavailable, match="refused"):
        rest.write([event("2026/19")])
    api.up()
    assert api.url == url
    assert rest.health().ok
    rest.write([event("2026/19")])
    assert api.notices["2026/19"]["version"] == 1


@pytest.mark.parametrize("url", ["ftp://example.org", "example.org/api", "http://host:port"])
def test_a_malformed_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        RestApi(base_url=url)


@pytest.mark.parametrize(
    "url", ["http://api.police.example", "http://10.1.2.3:8080/v1", "http://[2001:db8::1]/"]
)
def test_a_token_over_plain_http_is_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ConfigError, match="in clear"):
        RestApi(base_url=url, token=TOKEN)
    assert RestApi(base_url=url, token=TOKEN, allow_insecure_http=True).base_url == url.rstrip("/")
    RestApi(base_url=url)  # no token, nothing to leak
    RestApi(base_url=url.replace("http://", "https://"), token=TOKEN)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost/api", "http://[::1]"])
def test_a_token_over_http_to_this_host_is_fine(url: str) -> None:
    RestApi(base_url=url, token=TOKEN)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "https://politie.example/api/überweisung"}, "must be ASCII"),
        ({"base_url": "https://api.example", "token": "tökén"}, "printable ASCII"),
        ({"base_url": "https://api.example", "token": "abc\r\nX-Evil: 1"}, "printable ASCII"),
    ],
)
def test_what_no_request_could_carry_is_a_config_error(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RestApi(**options)


@pytest.mark.parametrize("notice_id", ["٢٠٢٦/١٢", "2026/12\n", "2026/١٢"])
def test_an_id_no_url_can_carry_is_a_refusal_not_a_crash(
    api: NationalApi, rest: RestApi, notice_id: str
) -> None:
    with pytest.raises(LocalSystemRejected, match="cannot name a path"):
        rest.write([event(notice_id)])
    with pytest.raises(LocalSystemRejected, match="cannot name a path"):
        rest.withdraw([event(notice_id, 2, Action.CANCEL)])
    assert api.requests == []


def test_the_plugin_is_found_by_its_entry_point_name(api: NationalApi) -> None:
    system = load_system("rest", {"base_url": api.url + "/", "timeout_s": 1.0})
    assert isinstance(system, RestApi) and system.base_url == api.url


# --- behind the ledger ---------------------------------------------------------------------


def test_an_older_version_after_a_newer_one_is_never_sent(
    api: NationalApi, ledger: LedgerSink
) -> None:
    newer = event("2026/20", 2, Action.UPDATE, person=replace(PERSON, weight=80.0))
    ledger.add(newer, 0)
    ledger.add(event("2026/20", 1), 0)  # same batch
    ledger.flush()
    ledger.add(event("2026/20", 1), 0)  # a later batch
    ledger.flush()
    assert sent(api, "2026/20") == [("notice", 2)]
    assert api.notices["2026/20"]["weight"] == 80.0


def test_after_a_cancel_a_stale_update_is_never_sent(api: NationalApi, ledger: LedgerSink) -> None:
    ledger.add(event("2026/21", 1), 0)
    ledger.flush()
    ledger.add(event("2026/21", 3, Action.CANCEL, reason="arrested"), 0)
    ledger.flush()
    ledger.add(event("2026/21", 2, Action.UPDATE), 0)
    ledger.flush()
    ledger.add(event("2026/21", 1), 0)
    ledger.flush()
    assert sent(api, "2026/21") == [("notice", 1), ("withdrawal", 3)]
    assert api.withdrawals["2026/21"]["version"] == 3


def test_a_cancel_never_seen_before_blocks_the_notice(api: NationalApi, ledger: LedgerSink) -> None:
    ledger.add(event("2026/22", 2, Action.CANCEL), 0)
    ledger.flush()
    ledger.add(event("2026/22", 1), 0)
    ledger.flush()
    assert sent(api, "2026/22") == [("withdrawal", 2)]
    assert "2026/22" not in api.notices


def test_replaying_a_batch_sends_nothing_new(api: NationalApi, ledger: LedgerSink) -> None:
    batch = [
        event("2026/23"),
        event("2026/24", 2, Action.UPDATE),
        event("2026/25", 2, Action.CANCEL),
    ]
    for e in batch:
        ledger.add(e, 1)
    ledger.flush()
    assert len(api.requests) == 3
    for e in batch:
        ledger.add(e, 1)
    ledger.flush()
    assert len(api.requests) == 3


def test_a_failed_flush_is_retried_whole_then_recorded(
    api: NationalApi, ledger: LedgerSink
) -> None:
    api.fail_next(1, 503, after=1)
    ledger.add(event("2026/26"), 0)
    ledger.add(event("2026/27"), 0)
    with pytest.raises(LocalSystemUnavailable):
        ledger.flush()
    ledger.flush()  # the buffer was kept: the same versions again, idempotently
    assert sorted(api.notices) == ["2026/26", "2026/27"]
    assert sum(len(sent(api, n)) for n in ("2026/26", "2026/27")) == 3  # one went twice
    before = len(api.requests)
    ledger.add(event("2026/26"), 0)
    ledger.add(event("2026/27"), 0)
    ledger.flush()
    assert len(api.requests) == before  # the ledger recorded both after the retry


def test_a_refusal_records_nothing_in_the_ledger(api: NationalApi, ledger: LedgerSink) -> None:
    api.fail_next(1, 422)
    ledger.add(event("2026/28"), 0)
    with pytest.raises(LocalSystemRejected):
        ledger.flush()
    ledger.flush()
    assert sent(api, "2026/28") == [("notice", 1)]


# --- over Kafka ----------------------------------------------------------------------------


def recorded(bus: Bus, country: str, count: int) -> Callable[[], bool]:
    def enough() -> bool:
        query = sa.select(ACK).where(ACK.c.country == country, ACK.c.status == "RECORDED")
        with bus.tracker.engine.connect() as conn:
            return len(conn.execute(query).all()) >= count

    return enough


@pytest.mark.kafka
def test_end_to_end_into_a_flaky_api(make_bus: Callable[..., Bus], tmp_path: Path) -> None:
    bus = make_bus(["FR"])
    with NationalApi(token=TOKEN, failure_rate=0.3, seed=7) as api:
        sink = LedgerSink(
            RestApi(base_url=api.url, token=TOKEN, timeout_s=2.0),
            ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        )
        adapter = Adapter(bus.settings, {"FR": sink})
        bus.adapters["FR"] = adapter
        bus._closers.append(adapter.close)

        ids = [f"2026/3{i}" for i in range(1, 5)]
        bus.hq.publish([draft(n, ("FR",)) for n in ids])
        bus.pump(recorded(bus, "FR", 4), timeout_s=20)
        [update] = bus.hq.publish([draft("2026/31", ("FR",), weight=81.5)])
        cancel = bus.hq.cancel("2026/32", "arrested in Lyon")
        bus.hq.publish([draft("2026/35", ("FR",))])
        assert (update.version, cancel.version) == (2, 2)
        bus.pump(recorded(bus, "FR", 7), timeout_s=20)

    assert {n: b["version"] for n, b in api.notices.items()} == {
        "2026/31": 2,
        "2026/32": 1,
        "2026/33": 1,
        "2026/34": 1,
        "2026/35": 1,
    }
    assert api.notices["2026/31"]["weight"] == 81.5
    assert api.notices["2026/33"]["target_countries"] == ["FR"]
    assert {n: (b["version"], b["reason"]) for n, b in api.withdrawals.items()} == {
        "2026/32": (2, "arrested in Lyon")
    }
    assert any(r.status == 503 for r in api.requests), "the API never failed: nothing was tested"
    for n in [*ids, "2026/35"]:
        # Retries may repeat a version, never go back to an older one or past a withdrawal.
        kinds, versions = zip(*sent(api, n), strict=True)
        assert list(versions) == sorted(versions), (n, sent(api, n))
        if "withdrawal" in kinds:
            assert set(kinds[kinds.index("withdrawal") :]) == {"withdrawal"}, (n, sent(api, n))


@pytest.mark.kafka
def test_unknown_lists_reach_the_api_as_null_over_kafka(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    """HQ's draft with unknown (null) lists, through HQ's database, the wire and the adapter:
    the API gets null for them, and [] for a list known to be empty."""
    bus = make_bus(["FR"])
    with NationalApi(token=TOKEN) as api:
        sink = LedgerSink(
            RestApi(base_url=api.url, token=TOKEN), ledger_url=f"sqlite:///{tmp_path}/ledger.db"
        )
        adapter = Adapter(bus.settings, {"FR": sink})
        bus.adapters["FR"] = adapter
        bus._closers.append(adapter.close)
        bus.hq.publish(
            [
                draft(
                    "2026/7",
                    ("FR",),
                    nationalities=None,
                    eyes_colors_id=None,
                    hairs_id=(),
                    images=None,
                )
            ]
        )
        bus.pump(recorded(bus, "FR", 1), timeout_s=20)
    body = api.notices["2026/7"]
    assert (body["nationalities"], body["eyes_colors_id"], body["images"]) == (None, None, None)
    assert (body["hairs_id"], body["languages_spoken_ids"]) == ([], [])


def test_the_api_cannot_list_so_its_copy_is_unverifiable(ledger: LedgerSink) -> None:
    assert ledger.entries() is None
