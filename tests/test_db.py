"""Table creation on a real PostgreSQL, as several instances of one country do it at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from notice_bus.bureau.sinks.local_system import LedgerSink, LocalSystem
from notice_bus.bureau.sinks.tables import LOCAL_TABLES
from notice_bus.runtime.db import make_engine
from notice_bus.wire.model import NoticeEvent


class NullSystem(LocalSystem):
    """A plug-in that takes everything; only its ledger matters here."""

    def write(self, notices: Sequence[NoticeEvent]) -> None:
        pass

    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        pass


def test_instances_starting_together_create_the_tables_once(
    new_postgres_db: Callable[[], str],
) -> None:
    url = new_postgres_db()
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def start_instance(ledger: bool) -> None:
        start.wait()
        try:
            if ledger:
                LedgerSink(NullSystem(), url)
            else:
                make_engine(url, LOCAL_TABLES)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_instance, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    tables = set(sa.inspect(make_engine(url)).get_table_names())
    assert {t.name for t in LOCAL_TABLES} <= tables
