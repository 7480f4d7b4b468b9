"""Rendering asterisk-conf/ from Hotline's configuration (no Asterisk needed)."""

from __future__ import annotations

import re

import pytest

from ivr.asterisk import dialplan
from ivr.lab import rootfs
from ivr.asterisk.dialplan import fallback_dial_string, render_config
from ivr.lab.instance import Lab
from ivr.errors import CommandError
from ivr.config import SETTINGS, Config, ConfigError


AGI_SECRET = "agi-secret-0123456789abcdef"


def make_config(**changes) -> Config:
    values = {s.name: s.default for s in SETTINGS}
    values["ari.password"] = "ari-secret-123"
    values["ami.secret"] = "ami-secret-456"
    values["agi.secret"] = AGI_SECRET
    return Config(values).replace(**changes) if changes else Config(values)


def test_every_placeholder_is_filled_and_secrets_come_from_the_configuration():
    files = render_config(make_config(ari__url="http://127.0.0.1:18088", sip__port=15060, ami__port=15038))
    assert set(files) == set(dialplan.MAIN_FILES)
    for name, text in files.items():
        assert "{{" not in text, name
    assert "password = ari-secret-123" in files["ari.conf"]
    assert "secret = ami-secret-456" in files["manager.conf"]
    assert re.search(r"^bindport = 18088$", files["http.conf"], re.M)
    assert re.search(r"^bind = 127.0.0.1:15060$", files["pjsip.conf"], re.M)
    assert re.search(r"^port = 15038$", files["manager.conf"], re.M)
    assert "websocket_write_timeout = 2000" in files["ari.conf"]
    assert "icesupport = no" in files["rtp.conf"]


def test_no_secret_means_no_configuration():
    values = {s.name: s.default for s in SETTINGS}
    with pytest.raises(ConfigError, match="with_lab_secrets"):
        render_config(Config(values))
    with pytest.raises(ConfigError, match="agi.secret is empty"):
        render_config(make_config(agi__secret=""))
    # The secret is an argument of AGI(): a ',' would split it, and a short one could be guessed.
    for bad in ("agi,secret-0123456789", "short", "agi secret 0123456789", "agi)secret(0123456789"):
        with pytest.raises(ConfigError, match="agi.secret must be"):
            render_config(make_config(agi__secret=bad))


def test_the_trunk_is_identified_by_its_addresses_only():
    files = render_config(make_config(sip__trunk_addresses=["203.0.113.7", "198.51.100.0/24"]))
    pjsip = files["pjsip.conf"]
    assert "match = 203.0.113.7/32" in pjsip and "match = 198.51.100.0/24" in pjsip
    assert re.search(r"^endpoint_identifier_order = ip$", pjsip, re.M)
    with pytest.raises(ConfigError, match="IP address"):
        render_config(make_config(sip__trunk_addresses=["sip.carrier.example"]))


def test_every_inbound_call_goes_to_stasis_then_fastagi_then_the_apology():
    ext = render_config(make_config(ari__app="hotline", agi__port=14573))["extensions.conf"]
    assert "Stasis(hotline,incoming,${HOTLINE_DIALED})" in ext
    assert '$["${STASISSTATUS}" = "FAILED"]?hotline-fallback,s,1' in ext
    assert ("AGI(agi://127.0.0.1:14573/incoming-call-policy,${GLOBAL(HOTLINE_AGI_SECRET)},${HOTLINE_DIALED},"
            "${HOTLINE_CALLER})") in ext
    assert "Playback(im-sorry&all-circuits-busy-now&please-try-call-later)" in ext
    assert re.search(r"^HOTLINE_FALLBACK_DIAL = $", ext, re.M)


def test_no_inbound_route_dials_anything_but_the_configured_fallback():
    files = render_config(make_config(sip__outbound_trunk="carrier", sip__fallback_number="+14155550199"))
    dials = re.findall(r"Dial\(([^)]*)\)", "\n".join(line for line in files["extensions.conf"].splitlines()
                                                  if not line.lstrip().startswith(";")))
    assert dials == ["${HOTLINE_FALLBACK_DIAL},30"]
    assert "HOTLINE_FALLBACK_DIAL = PJSIP/+14155550199@carrier" in files["extensions.conf"]
    # Every endpoint that is not the trunk has the empty context.
    contexts = re.findall(r"^context = (\S+)", files["pjsip.conf"], re.M)
    assert sorted(set(contexts)) == ["hotline-inbound", "hotline-no-dialing"]
    assert "res_pjsip_refer" not in re.sub(r";.*", "", files["modules.conf"])


def test_fallback_number_forms():
    assert fallback_dial_string(make_config()) == ""
    assert fallback_dial_string(make_config(sip__fallback_number="sip:desk@10.0.0.9:5060")) == \
        "PJSIP/hotline-direct/sip:desk@10.0.0.9:5060"
    assert fallback_dial_string(make_config(sip__fallback_number="+1 (415) 555-0199",
                                            sip__outbound_trunk="carrier")) == "PJSIP/+14155550199@carrier"
    with pytest.raises(ConfigError, match="outbound_trunk"):
        fallback_dial_string(make_config(sip__fallback_number="+14155550199"))
    with pytest.raises(ConfigError):
        fallback_dial_string(make_config(sip__fallback_number="+1415,Dial(x)", sip__outbound_trunk="c"))


def test_values_that_would_break_the_files_are_refused():
    with pytest.raises(ConfigError, match="';'"):
        render_config(make_config(ari__password="abc;def"))
    with pytest.raises(ConfigError, match="simple name"):
        render_config(make_config(ari__username="x]\n[evil"))
    with pytest.raises(ConfigError, match="http://"):
        render_config(make_config(ari__url="https://127.0.0.1:8089"))
    with pytest.raises(ConfigError, match="IP address"):
        render_config(make_config(sip__bind="localhost.localdomain"))


def test_test_routes_and_lab_directories_only_when_asked():
    plain = render_config(make_config())
    assert "#include" not in plain["pjsip.conf"] + plain["extensions.conf"]
    lab = render_config(make_config(), test_routes=True, instance_dir="/var/lib/hotline/instances/e2e",
                        systemname="hotline-e2e")
    assert "#include pjsip_lab.conf" in lab["pjsip.conf"]
    assert "#include extensions_lab.conf" in lab["extensions.conf"]
    assert f"match = {dialplan.LAB_CALLER_ADDRESS}" in lab["pjsip_lab.conf"]
    assert "astrundir => /var/lib/hotline/instances/e2e/run" in lab["asterisk.conf"]
    # The lab's only dialing route reaches loopback phones on a numeric port.
    dials = re.findall(r"Dial\(([^)]*)\)", lab["extensions_lab.conf"])
    assert dials and all(d.startswith("PJSIP/hotline-direct/sip:lab-phone@127.0.0.1:${EXTEN:5}") for d in dials)
    assert re.findall(r"exten => (\S+),1,Dial", lab["extensions_lab.conf"]) == ["_dial-XXXX", "_dial-XXXXX"]


def test_lab_outbound_trunk_towards_a_contact():
    pjsip = render_config(make_config(sip__outbound_trunk="lab-carrier",
                                      sip__outbound_trunk_contact="sip:127.0.0.1:15080"))["pjsip.conf"]
    assert "[lab-carrier](hotline-outbound-trunk)" in pjsip
    assert "contact = sip:127.0.0.1:15080" in pjsip


def test_lab_commands_need_root(monkeypatch, tmp_path):
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 1000)
    lab = Lab(make_config(general__data_dir=str(tmp_path), asterisk__root=str(tmp_path / "root"),
                          ari__url="http://127.0.0.1:9", ami__port=9, sip__port=9))
    with pytest.raises(CommandError, match="needs root"):
        lab.up()
    status = lab.status()  # works for anyone, and never raises for a stopped lab
    assert not status["running"] and not status["root_ready"]
    assert not (status["ari"]["ok"] or status["ami"]["ok"] or status["sip"]["ok"])


def test_lab_refuses_to_build_without_disk_space(monkeypatch, tmp_path):
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 0)
    monkeypatch.setattr(rootfs.shutil, "disk_usage", lambda path: type("U", (), {"free": 10_000_000})())
    lab = Lab(make_config(general__data_dir=str(tmp_path), asterisk__root=str(tmp_path / "root")))
    with pytest.raises(CommandError, match="not enough disk space"):
        lab.ensure_root()


def test_a_root_holding_only_the_prompt_cache_is_built_over(monkeypatch, tmp_path):
    """A synthesizer that ran before the first `asterisk up` made <root>/var/lib/hotline/sounds: the
    build goes on (the cache is regenerated); anything else in an unfinished root stops it."""
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 0)
    root = tmp_path / "root"
    (root / "var/lib/hotline/sounds").mkdir(parents=True)
    (root / "var/lib/hotline/sounds/abc.wav").write_bytes(b"RIFF")
    built = []
    builder = rootfs.RootBuilder(make_config(asterisk__root=str(root)))
    monkeypatch.setattr(builder, "_build", lambda: built.append(not root.exists()))
    assert builder.ensure_root() and built == [True]

    (root / "etc").mkdir(parents=True)  # what an interrupted build or someone else left
    with pytest.raises(CommandError, match="not a finished lab root"):
        builder.ensure_root()


def test_instance_names_are_checked():
    with pytest.raises(ConfigError):
        Lab(make_config(), instance="../etc")


#: The module of each dialplan function the configuration uses (modules.conf loads only those listed).
FUNCTION_MODULES = {"CALLERID": "func_callerid.so", "CHANNEL": "func_channel.so", "FILTER": "func_strings.so",
                    "LEN": "func_strings.so", "GLOBAL": "func_global.so", "IF": "func_logic.so",
                    "HANGUPCAUSE": "func_hangupcause.so", "HANGUPCAUSE_KEYS": "func_hangupcause.so"}


def test_every_dialplan_function_used_is_loaded():
    """A function whose module is not loaded expands to nothing, silently (GLOBAL() did: every
    FastAGI request lost its secret)."""
    files = render_config(make_config(), test_routes=True, instance_dir="/x")
    used = set()
    for name in ("extensions.conf", "extensions_lab.conf"):
        used |= set(re.findall(r"\$\{([A-Z_]+)\(", files[name]))
    assert used, "the dialplan uses no function at all?"
    unknown = used - set(FUNCTION_MODULES)
    assert not unknown, f"add the module of {unknown} to FUNCTION_MODULES"
    loaded = set(re.findall(r"^load => (\S+)", files["modules.conf"], re.M))
    assert {FUNCTION_MODULES[f] for f in used} <= loaded


def test_an_asterisk_outside_the_lab_gets_its_own_asterisk_conf_only_when_asked(tmp_path):
    assert "asterisk.conf" not in render_config(make_config())
    files = render_config(make_config(), asterisk_conf=True, systemname="hotline-node1",
                          moddir="/usr/lib/aarch64-linux-gnu/asterisk/modules")
    conf = files["asterisk.conf"]
    assert "systemname = hotline-node1" in conf
    assert "astmoddir => /usr/lib/aarch64-linux-gnu/asterisk/modules" in conf
    assert "astetcdir => /etc/asterisk" in conf and "{{" not in conf
    with pytest.raises(ConfigError, match="simple name"):
        render_config(make_config(), asterisk_conf=True, systemname="two words")
    # The lab's instance directories win over it.
    lab = render_config(make_config(), asterisk_conf=True, instance_dir="/var/lib/hotline/instances/x")
    assert "astetcdir => /var/lib/hotline/instances/x/etc" in lab["asterisk.conf"]


def test_modules_and_package_files_are_found_the_same_way_for_the_lab_and_an_image(tmp_path):
    assert dialplan.find_moddir(tmp_path) is None
    (tmp_path / "usr/lib/x86_64-linux-gnu/asterisk/modules").mkdir(parents=True)
    assert dialplan.find_moddir(tmp_path) == "/usr/lib/x86_64-linux-gnu/asterisk/modules"
    etc = tmp_path / "etc/asterisk"
    etc.mkdir(parents=True)
    (etc / "indications.conf").write_text("[general]\ncountry=us\n")
    (etc / "pjsip.conf").write_text("; the package's sample, never taken\n")
    assert dialplan.package_default_files(etc) == {"indications.conf": "[general]\ncountry=us\n"}
    assert Lab(make_config(asterisk__root=str(tmp_path)))._moddir() == "/usr/lib/x86_64-linux-gnu/asterisk/modules"
