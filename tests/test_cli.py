"""The ``notice-bus`` command as a user runs it, against the real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.cli import main
from notice_bus.errors import BrokerUnavailable, LocalSystemUnavailable
from notice_bus.hq import HQ
from notice_bus.settings import Settings
from notice_bus.sql_sink import SqlSink
from notice_bus.tables import OUTBOX
from tests.conftest import Bus
from tests.factories import notice_json
from tests.test_validation import INTERPOL_DETAIL

pytestmark = pytest.mark.kafka
#: The report's JSON keys agreed in the walking-skeleton issue.
REPORT_KEYS = {
    "country",
    "sent",
    "recorded",
    "outstanding",
    "p50_lag_s",
    "p95_lag_s",
    "max_lag_s",
    "oldest_outstanding_s",
    "status",
}


def outbox_size(settings: Settings) -> int:
    engine = sa.create_engine(settings.hq_database_url)
    try:
        with engine.connect() as conn:
            return len(conn.execute(sa.select(OUTBOX)).all())
    except sa.exc.OperationalError:
        return 0  # no HQ database was even created
    finally:
        engine.dispose()


def test_topics_init_is_idempotent(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "init", "--countries", "fr, TH"]) == 0
    assert "created 11 topics" in capsys.readouterr().out  # 5 per country and the schema topic
    assert main(["topics", "init", "--countries", "FR,TH"]) == 0
    assert "created 0 topics" in capsys.readouterr().out


def test_bad_country_code_is_refused(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "init", "--countries", "FR,France"]) == 2
    assert "'France'" in capsys.readouterr().err


def test_invalid_file_is_refused_before_anything_is_sent(
    cli_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["topics", "init", "--countries", "FR"])
    path = tmp_path / "notices.json"
    path.write_text(json.dumps([notice_json("2026/1"), notice_json("2026/2", height=9)]))
    assert main(["publish", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}[1]" in err and "notice 2026/2" in err and "'height'" in err
    assert outbox_size(cli_env) == 0  # not even the valid first notice


def test_publish_interpol_shape_then_cancel(
    cli_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["topics", "init", "--countries", "FR,TH"])
    path = tmp_path / "detail.json"
    path.write_text(json.dumps(INTERPOL_DETAIL))
    assert main(["publish", str(path)]) == 0
    assert "publish  1993/27493 v1" in capsys.readouterr().out
    assert outbox_size(cli_env) == 2  # to both registered countries
    assert main(["cancel", "1993/27493", "--reason", "withdrawn by the requesting NCB"]) == 0
    assert "cancel   1993/27493 v2" in capsys.readouterr().out
    assert main(["cancel", "1993/27493"]) == 2
    assert "already cancelled" in capsys.readouterr().err
    assert main(["publish", str(path)]) == 2
    assert "cannot be updated" in capsys.readouterr().err


def test_commands_before_topics_init_say_so(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cancel", "2026/404"]) == 2
    assert "run `notice-bus topics init" in capsys.readouterr().err


def test_cancel_of_unknown_notice(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    main(["topics", "init", "--countries", "FR"])
    assert main(["cancel", "2026/404"]) == 2
    assert "never published" in capsys.readouterr().err


def test_report_json_has_the_agreed_keys(
    cli_env: Settings,
    make_bus: Callable[..., Bus],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = make_bus(["FR", "TH"])
    bus.adapter("FR", f"sqlite:///{tmp_path}/fr.db")  # TH never connects
    path = tmp_path / "n.json"
    path.write_text(json.dumps(notice_json("2026/5")))
    assert main(["publish", str(path)]) == 0
    bus.pump(lambda: bus.tracker.step() == 0 and _recorded(bus) == 1)
    capsys.readouterr()
    assert main(["report", "--format", "json"]) == 0
    rows = {r["country"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows["FR"]) >= REPORT_KEYS
    assert (rows["FR"]["recorded"], rows["FR"]["status"]) == (1, "OK")
    assert (rows["TH"]["outstanding"], rows["TH"]["status"]) == (1, "NEVER_CONNECTED")
    assert main(["report"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[1].startswith("TH")  # worst first


def _recorded(bus: Bus) -> int:
    from notice_bus.report import build_report

    return sum(r.recorded for r in build_report(bus.tracker.engine, bus.settings))


def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(
        bootstrap_servers="127.0.0.1:1", hq_database_url=f"sqlite:///{tmp_path}/h.db"
    )
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1"):
        HQ(settings).publish([])


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(
        LocalSystemUnavailable, match=r"bureau:\*\*\*@127\.0\.0\.1:1/police unavailable"
    ):
        SqlSink("postgresql://bureau:secret@127.0.0.1:1/police")
