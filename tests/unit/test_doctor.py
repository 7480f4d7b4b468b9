"""``hotline doctor`` without Asterisk: every check fails with a fix, quickly, and the exit status says so."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from ivr.asterisk.agi import AgiServer
from ivr.config import SETTINGS, Config
from ivr.cli.doctor import FAIL, OK, check_agi, cmd_doctor, run_checks
from ivr.shells.fastagi import _health_route


def config_without_asterisk(tmp_path) -> Config:
    values = {s.name: s.default for s in SETTINGS}
    return Config(values).replace(
        general__data_dir=str(tmp_path), database__url=f"sqlite:///{tmp_path / 'unmigrated.db'}",
        ari__url="http://127.0.0.1:9", ari__password="x", ami__port=9, ami__secret="x", agi__port=9,
        agi__secret="doctor-agi-secret-0123456789", sip__port=9,
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


async def test_the_fastagi_probe_sends_the_secret(tmp_path):
    """Hotline's FastAGI server answers only requests with agi.secret: the doctor's probe sends it,
    and says so when the server refuses it (another secret, or an address not allowed)."""
    server = AgiServer("127.0.0.1", 0, secret="doctor-agi-secret-0123456789")
    server.add_route("health", _health_route)
    await server.start()
    port = server.server.sockets[0].getsockname()[1]
    config = config_without_asterisk(tmp_path).replace(agi__port=port)
    try:
        ok = await check_agi(config)
        refused = await check_agi(config.replace(agi__secret="another-secret-0123456789"))
        missing = await check_agi(config.replace(agi__secret=""))
    finally:
        await server.close()
    assert ok.status == OK and "Hotline's FastAGI server answers" in ok.detail
    assert refused.status == FAIL and "refuses this address (agi.allowed_peers) or the secret" in refused.detail
    assert "agi.secret" in refused.fix
    assert missing.status == FAIL and "no FastAGI secret" in missing.detail and "agi.secret" in missing.fix
    assert server.served == 1 and server.rejected == 1


async def test_the_dialplan_must_pass_the_servers_secret():
    """After an upgrade, an extensions.conf rendered before agi.secret (or with another one) makes the
    server refuse every request: the doctor reads the dialplan's secret (AMI Getvar) and says so."""
    from ivr.asterisk.ami import AmiError
    from ivr.cli.doctor import _dialplan_secret_problem

    class Ami:
        def __init__(self, value=None, error=None):
            self.value, self.error, self.sent = value, error, []

        async def send(self, fields):
            self.sent.append(fields)
            if self.error:
                raise AmiError(self.error)
            return {"Response": "Success", "Variable": fields["Variable"], "Value": self.value}

    secret = "doctor-agi-secret-0123456789"
    same = Ami(secret)
    assert await _dialplan_secret_problem(same, secret) == ""
    assert same.sent == [{"Action": "Getvar", "Variable": "HOTLINE_AGI_SECRET"}]
    assert "rendered before agi.secret" in await _dialplan_secret_problem(Ami(""), secret)
    assert "is not agi.secret" in await _dialplan_secret_problem(Ami("another-secret-0123456789"), secret)
    assert "is not agi.secret" in await _dialplan_secret_problem(Ami(secret), "")
    assert "Permission denied" in await _dialplan_secret_problem(Ami(error="Permission denied"), secret)
