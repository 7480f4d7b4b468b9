"""``hotline doctor`` without Asterisk: every check fails with a fix, quickly, and the exit status says so."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from ivr.config import SETTINGS, Config
from ivr.cli.doctor import FAIL, OK, cmd_doctor, run_checks


def config_without_asterisk(tmp_path) -> Config:
    values = {s.name: s.default for s in SETTINGS}
    return Config(values).replace(
        general__data_dir=str(tmp_path), database__url=f"sqlite:///{tmp_path / 'unmigrated.db'}",
        ari__url="http://127.0.0.1:9", ari__password="x", ami__port=9, ami__secret="x", agi__port=9, sip__port=9,
        tts__cache_dir=str(tmp_path / "sounds"))


async def test_what_is_missing_is_said_with_its_fix(tmp_path):
    started = time.monotonic()
    checks = {check.name: check for check in await run_checks(config_without_asterisk(tmp_path))}
    assert time.monotonic() - started < 10
    assert checks["database"].status == FAIL and checks["database"].fix == "run `hotline migrate`"
    assert checks["ari"].status == FAIL and "hotline asterisk up" in checks["ari"].fix
    assert checks["ami"].status == FAIL and "cannot connect" in checks["ami"].detail
    assert checks["fastagi"].status == FAIL and checks["fastagi"].fix == "run `hotline serve`"
    assert checks["sip"].status == FAIL
    assert checks["tts"].status == OK          # espeak-ng and sox are installed where the tests run
    assert all(check.fix for check in checks.values() if check.status == FAIL)


def test_the_exit_status_and_json(tmp_path, capsys):
    assert cmd_doctor(config_without_asterisk(tmp_path), SimpleNamespace(json=True)) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and {c["name"] for c in report["checks"]} >= {"database", "ari", "ami", "fastagi"}
