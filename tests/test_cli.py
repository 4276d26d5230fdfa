"""The ``notice-bus`` command as a user runs it, against the real broker."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.cli import main, parser
from notice_bus.cli.exit_codes import EX_CONFIG, EX_DATAERR, EX_USAGE, exit_code
from notice_bus.errors import (
    AlreadyCancelled,
    BrokerUnavailable,
    HQStateError,
    InvalidNotice,
    LocalSystemUnavailable,
    NoticeBusError,
    WriteConflict,
)
from notice_bus.hq.publisher import HQ
from notice_bus.hq.tables import OUTBOX
from notice_bus.runtime.local_broker import free_port
from notice_bus.runtime.settings import Settings
from tests.conftest import Bus, command_env
from tests.factories import draft, notice_json
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
    # 5 per country, the schema topic and the keyring topic
    assert "created 18 topics" in capsys.readouterr().out
    assert main(["topics", "init", "--countries", "FR,TH"]) == 0
    assert "created 0 topics" in capsys.readouterr().out


def test_bad_country_code_is_refused(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:  # a usage error, told before anything runs
        main(["topics", "init", "--countries", "FR,France"])
    assert usage.value.code == EX_USAGE
    assert "'France'" in capsys.readouterr().err


def test_invalid_file_is_refused_before_anything_is_sent(
    cli_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["topics", "init", "--countries", "FR"])
    path = tmp_path / "notices.json"
    path.write_text(json.dumps([notice_json("2026/1"), notice_json("2026/2", height=9)]))
    assert main(["publish", str(path)]) == EX_DATAERR
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
    assert main(["cancel", "1993/27493"]) == 0  # idempotent: a retry gets what it wanted
    assert "cancel   1993/27493 already cancelled" in capsys.readouterr().out
    assert main(["publish", str(path)]) == EX_DATAERR
    assert "cannot be updated" in capsys.readouterr().err


def test_commands_before_topics_init_say_so(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cancel", "2026/404"]) == EX_CONFIG
    assert "run `notice-bus topics init" in capsys.readouterr().err


def test_cancel_of_unknown_notice(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    main(["topics", "init", "--countries", "FR"])
    assert main(["cancel", "2026/404"]) == EX_DATAERR
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
    from notice_bus.reports.report import build_report

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


def test_exit_codes_tell_the_kind_of_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from notice_bus.runtime.db import make_engine
    from notice_bus.tracker.tables import TRACKER_TABLES

    monkeypatch.chdir(tmp_path)
    tracker = f"sqlite:///{tmp_path}/tracker.db"
    make_engine(tracker, TRACKER_TABLES).dispose()
    monkeypatch.setenv("NOTICE_BUS_TRACKER_DATABASE_URL", tracker)
    with pytest.raises(SystemExit) as usage:
        main(["no-such-command"])
    assert usage.value.code == 64
    with pytest.raises(SystemExit) as usage:
        main(["report", "--since", "yesterday"])
    assert usage.value.code == 64
    assert main(["--config", str(tmp_path / "missing.toml"), "relay"]) == 78
    assert main(["report", "--output", str(tmp_path / "no" / "such" / "r.txt")]) == 73
    assert "cannot write the report" in capsys.readouterr().err
    down = "postgresql+psycopg://tracker@127.0.0.1:1/tracker"
    assert main(["report", "--database-url", down]) == 69
    typo = tmp_path / "trakcer.db"
    assert main(["report", "--database-url", f"sqlite:///{typo}"]) == 78
    assert "does not exist" in capsys.readouterr().err
    assert not typo.exists()  # never made for the occasion
    assert exit_code(WriteConflict("raced")) == 75
    assert exit_code(InvalidNotice("bad")) == exit_code(HQStateError("refused")) == 65
    assert exit_code(NoticeBusError("unclassified")) == exit_code(KeyError("bug")) == 70


def test_a_retried_cancel_exits_0_and_sends_what_the_first_left(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["topics", "init", "--countries", "FR"])
    with HQ(cli_env) as hq:
        hq.publish([draft("2026/7", targets=("FR",))])
        hq.cancel("2026/7", relay=False)  # as if the broker went away before the relay
        assert hq.pending() == 1
    capsys.readouterr()
    assert main(["cancel", "2026/7", "--reason", "arrested"]) == 0
    assert "cancel   2026/7 already cancelled" in capsys.readouterr().out
    with HQ(cli_env) as hq:
        assert hq.pending() == 0
        with pytest.raises(AlreadyCancelled):
            hq.cancel("2026/7")


def test_publish_reads_standard_input(cli_env: Settings, tmp_path: Path) -> None:
    main(["topics", "init", "--countries", "FR"])
    env = command_env(cli_env, NOTICE_BUS_HQ_DATABASE_URL=cli_env.hq_database_url)
    done = subprocess.run(
        [sys.executable, "-m", "notice_bus.cli", "publish", "-"],
        input=json.dumps([notice_json("2026/8"), notice_json("2026/9")]),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "publish  2026/8 v1" in done.stdout and "2 sent" in done.stdout


def test_an_invalid_file_is_told_at_once_with_the_broker_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("NOTICE_BUS_HQ_DATABASE_URL", f"sqlite:///{tmp_path}/hq.db")
    path = tmp_path / "notices.json"
    path.write_text(json.dumps([notice_json("2026/1", nationalities=["XX"])]))
    started = time.monotonic()
    assert main(["publish", str(path)]) == 65
    assert time.monotonic() - started < 5
    assert "'nationalities[0]'" in capsys.readouterr().err


def test_version_and_every_default_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"notice-bus {version('notice-bus')}"

    def parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for child in a.choices.values():
                    yield from parsers(child)

    for p in parsers(parser()):
        text = " ".join(p.format_help().split())
        for a in p._actions:
            if not a.option_strings or a.required or a.default in (False, argparse.SUPPRESS):
                continue  # positional, required, a flag, or --help
            if a.default is None:  # nothing to show: the help says what happens instead
                assert "default" in (a.help or ""), (p.prog, a.dest)
            else:
                assert f"(default: {a.default})" in text, (p.prog, a.dest)


def test_db_upgrade_names_what_it_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/hq.db"
    assert main(["db", "upgrade", "--database-url", url]) == 78  # nothing there: which role?
    assert "--role hq" in capsys.readouterr().err
    assert main(["db", "upgrade", "--database-url", url, "--role", "hq"]) == 0
    assert capsys.readouterr().out.strip() == "hq: hq_0002 (from none)"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert capsys.readouterr().out.strip() == "hq: hq_0002 (up to date)"
