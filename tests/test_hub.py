"""Several countries in one adapter (a regional hub): each keeps its own local system, its
own acknowledgements and its own health, and one country's outage holds only that country."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.hq.generate import make_drafts
from tests.conftest import Bus
from tests.support.tcp_proxy import TcpProxy
from tests.support.workload import local_state

pytestmark = pytest.mark.kafka


def _count(url: str) -> int:
    with sa.create_engine(url).connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM red_notice")).scalar_one())


def test_a_hub_serves_each_country_into_its_own_system(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR", "DE", "TH"])
    urls = {cc: f"sqlite:///{tmp_path}/{cc}.db" for cc in bus.countries}
    hub = Adapter(bus.settings, {cc: SqlSink(u) for cc, u in urls.items()}, hub="eu-asia")
    bus.adapters["hub"] = hub
    broadcast = make_drafts(10, targeted_share=0.0)
    bus.hq.publish(broadcast)
    targeted = make_drafts(1, first_number=20000, countries=["DE"], targeted_share=1.0)
    bus.hq.publish(targeted)
    want = {"FR": 10, "DE": 11, "TH": 10}
    bus.pump(lambda: all(_count(urls[cc]) == n for cc, n in want.items()))
    assert set(local_state(urls["DE"])) == {d.notice_id for d in broadcast + targeted}
    # The tracker finds the hub's group for each country: live, and nothing waiting (once
    # the hub is idle: its last batch's commit follows its acknowledgement).
    bus.pump(lambda: hub.step() == 0 and bus.tracker.step() == 0)
    samples = bus.tracker.sample()
    for cc in bus.countries:
        assert samples[cc].members == 1, cc
        assert samples[cc].committed == samples[cc].end_offset, cc


def test_one_countrys_outage_holds_only_that_country(
    make_bus: Callable[..., Bus], new_postgres_db: Callable[[], str], tmp_path: Path
) -> None:
    bus = make_bus(["FR", "TH"], retry_attempts=2)
    url = sa.make_url(new_postgres_db())
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        fr_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        th_url = f"sqlite:///{tmp_path}/th.db"
        hub = Adapter(bus.settings, {"FR": SqlSink(fr_url), "TH": SqlSink(th_url)})
        bus.adapters["hub"] = hub
        bus.hq.publish(make_drafts(3))
        bus.pump(lambda: _count(fr_url) == 3 and _count(th_url) == 3)
        proxy.cut()
        bus.hq.publish(make_drafts(5, first_number=30000))
        bus.pump(lambda: hub.holding and _count(th_url) == 8)  # TH goes on
        proxy.restore()
        bus.pump(lambda: not hub.holding and _count(fr_url) == 8, timeout_s=60)
        assert local_state(fr_url) == local_state(th_url)


def test_a_hub_keeps_its_partitions_when_its_metadata_is_refreshed(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    # kafka-python rebalances a group whose leader assigned from a snapshot of the topics'
    # metadata that a later refresh finds different; an adapter that learnt its topics before
    # subscribing was rebalanced mid-traffic at its first periodic refresh.
    bus = make_bus(["FR", "DE", "TH"])
    urls = {cc: f"sqlite:///{tmp_path}/{cc}.db" for cc in bus.countries}
    hub = Adapter(bus.settings, {cc: SqlSink(u) for cc, u in urls.items()})
    revoked: list[object] = []
    on_revoked = hub._revoked

    def counted(partitions: Any) -> None:
        if partitions:  # kafka-python revokes nothing before a first join
            revoked.append(partitions)
        on_revoked(partitions)

    hub._revoked = counted  # type: ignore[method-assign]
    bus.adapters["hub"] = hub
    bus.pump(lambda: bool(hub._consumer.assignment()))  # joined at once, as a host does
    bus.hq.publish(make_drafts(2))
    bus.pump(lambda: all(_count(u) == 2 for u in urls.values()))
    hub._consumer.topics()  # a metadata refresh, as kafka-python makes every 30 s
    bus.hq.publish(make_drafts(2, first_number=30000))
    bus.pump(lambda: all(_count(u) == 4 for u in urls.values()))
    assert revoked == []


def test_a_country_added_to_a_hub_keeps_the_hubs_group_and_offsets(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR", "DE", "TH"])
    first = {cc: f"sqlite:///{tmp_path}/{cc}-1.db" for cc in ("FR", "DE")}
    hub = Adapter(bus.settings, {cc: SqlSink(u) for cc, u in first.items()})
    bus.adapters["hub"] = hub
    bus.hq.publish(make_drafts(5, targeted_share=0.0))
    bus.pump(lambda: all(_count(u) == 5 for u in first.values()))
    bus.pump(lambda: hub.step() == 0 and bus.tracker.step() == 0)  # idle: all committed
    hub.close()
    del bus.adapters["hub"]

    # The same hub, restarted with TH added and fresh local copies for FR and DE: it resumes
    # from its offsets, so FR and DE are not read again from the start; TH is read whole.
    again = {cc: f"sqlite:///{tmp_path}/{cc}-2.db" for cc in ("FR", "DE", "TH")}
    grown = Adapter(bus.settings, {cc: SqlSink(u) for cc, u in again.items()})
    bus.adapters["hub"] = grown
    assert grown.group == hub.group
    bus.pump(lambda: _count(again["TH"]) == 5)
    for _ in range(10):
        grown.step()
    assert _count(again["FR"]) == 0 and _count(again["DE"]) == 0
