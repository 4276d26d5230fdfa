"""HQ's side of the resilience tests: a stream of publishes, updates and cancels through a
real HQ, and the checks that a country's local copy ended exactly where HQ is."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import sqlalchemy as sa

from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.errors import BrokerUnavailable, HQStateError
from notice_bus.hq.generate import make_drafts, revise
from notice_bus.hq.publisher import HQ
from notice_bus.hq.tables import HQ_NOTICE, OUTBOX
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import ACK
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import Draft


class Workload(threading.Thread):
    """Publishes ``notices`` notices in rounds, updating and cancelling some after each round,
    until ``updates`` and ``cancels`` are done. Rides out broker outages: HQ's outbox keeps
    what could not be sent, and the relay is retried."""

    def __init__(
        self,
        settings: Settings,
        *,
        notices: int,
        updates: int,
        cancels: int,
        rounds: int = 20,
        pause_s: float = 0.5,
        seed: int = 11,
    ) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.notices, self.updates, self.cancels = notices, updates, cancels
        self.rounds, self.pause_s = rounds, pause_s
        self.rng = random.Random(seed)
        self.events = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with HQ(self.settings) as hq:
                self._run(hq)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc

    def _run(self, hq: HQ) -> None:
        drafts = make_drafts(self.notices, seed=self.rng.randrange(10**6))
        current: dict[str, Draft] = {}
        per_round = -(-self.notices // self.rounds)
        ups, cans = self.updates / self.rounds, self.cancels / self.rounds
        done_up = done_can = 0
        for r in range(self.rounds):
            fresh = drafts[r * per_round : (r + 1) * per_round]
            self._retrying(hq, lambda f=fresh: hq.publish(f))
            current.update((d.notice_id, d) for d in fresh)
            self.events += len(fresh)
            target_up = round(ups * (r + 1)) if r < self.rounds - 1 else self.updates
            if target_up > done_up:
                picks = self.rng.sample(sorted(current), k=min(len(current), target_up - done_up))
                revised = [revise(current[i], self.rng) for i in picks]
                self._retrying(hq, lambda d=revised: hq.publish(d))
                current.update((d.notice_id, d) for d in revised)
                done_up += len(revised)
                self.events += len(revised)
            target_can = round(cans * (r + 1)) if r < self.rounds - 1 else self.cancels
            while done_can < target_can and current:
                victim = self.rng.choice(sorted(current))
                del current[victim]
                self._retrying(hq, lambda v=victim: hq.cancel(v, "located and arrested"))
                done_can += 1
                self.events += 1
            time.sleep(self.pause_s)
        self._retrying(hq, hq.relay)

    @staticmethod
    def _retrying(hq: HQ, call: Any) -> None:
        """Until it goes through. A call that committed in HQ's database before the broker
        failed is a no-op the second time (an unchanged publish is skipped, a second cancel
        refused), and its outbox rows go out with the next relay."""
        while True:
            try:
                call()
                return
            except BrokerUnavailable:
                time.sleep(1)
            except HQStateError:
                return


def hq_state(settings: Settings) -> dict[str, tuple[int, str]]:
    engine = sa.create_engine(settings.hq_database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(HQ_NOTICE.c.notice_id, HQ_NOTICE.c.version, HQ_NOTICE.c.status)
        ).all()
    engine.dispose()
    return {r.notice_id: (r.version, r.status) for r in rows}


def local_state(url: str) -> dict[str, tuple[int, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(RED_NOTICE.c.notice_id, RED_NOTICE.c.version, RED_NOTICE.c.status)
            ).all()
    except sa.exc.OperationalError:
        return {}  # not created yet
    except sa.exc.ProgrammingError:
        return {}
    finally:
        engine.dispose()
    return {r.notice_id: (r.version, r.status) for r in rows}


def content_mismatches(settings: Settings, url: str) -> list[str]:
    """Active notices whose local fields differ from HQ's current version."""
    hq, local = sa.create_engine(settings.hq_database_url), sa.create_engine(url)
    with hq.connect() as conn:
        people = {
            r.notice_id: r.person
            for r in conn.execute(sa.select(HQ_NOTICE).where(HQ_NOTICE.c.status == "ACTIVE"))
        }
    with local.connect() as conn:
        rows = {r.notice_id: r for r in conn.execute(sa.select(RED_NOTICE))}
    hq.dispose()
    local.dispose()
    bad = []
    for notice_id, person in people.items():
        row = rows.get(notice_id)
        fields = ("name", "forename", "weight", "distinguishing_marks", "arrest_warrants")
        if row is None or any(getattr(row, f) != person.get(f) for f in fields):
            bad.append(notice_id)
    return bad


def unrecorded(settings: Settings, country: str) -> list[tuple[str, int]]:
    """Final versions of notices HQ sent to ``country`` without a RECORDED acknowledgement at
    the tracker. What was sent comes from HQ's outbox, not from the tracker, so a tracker that
    has not caught up yet cannot make this look empty."""
    topic = TopicNames(settings.topic_prefix).notices(country)
    hq = sa.create_engine(settings.hq_database_url)
    with hq.connect() as conn:
        sent = conn.execute(
            sa.select(HQ_NOTICE.c.notice_id, HQ_NOTICE.c.version).where(
                HQ_NOTICE.c.notice_id.in_(
                    sa.select(OUTBOX.c.key).where(
                        OUTBOX.c.topic == topic, OUTBOX.c.sent_at.isnot(None)
                    )
                )
            )
        ).all()
    hq.dispose()
    engine = sa.create_engine(settings.tracker_database_url)
    with engine.connect() as conn:
        recorded = set(
            conn.execute(
                sa.select(ACK.c.notice_id, ACK.c.version).where(
                    ACK.c.country == country, ACK.c.status == "RECORDED"
                )
            ).all()
        )
    engine.dispose()
    return [(n, v) for n, v in sent if (n, v) not in recorded]


def recorded_counts(settings: Settings, country: str) -> dict[tuple[str, int], int]:
    """How many RECORDED rows the tracker holds per notice version (deduplicated: 1 each)."""
    engine = sa.create_engine(settings.tracker_database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ACK.c.notice_id, ACK.c.version, sa.func.count())
            .where(ACK.c.country == country, ACK.c.status == "RECORDED")
            .group_by(ACK.c.notice_id, ACK.c.version)
        ).all()
    engine.dispose()
    return {(n, v): c for n, v, c in rows}
