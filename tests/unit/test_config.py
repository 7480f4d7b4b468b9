"""The settings table, the YAML + environment loader, and the docs generated from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.config import SETTINGS, ConfigError, load_config, settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_defaults(tmp_path):
    config = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path)})
    assert config.api.host == "127.0.0.1" and config.api.port == 8080
    assert config.ari.url == "http://127.0.0.1:8088" and config.ari.app == "hotline"
    assert config.ami.port == 5038 and config.agi.port == 4573
    assert config.sip.default_region == "US" and config.tts.engine == "espeak-ng"
    assert config.database_url == f"sqlite:///{tmp_path / 'hotline.db'}"
    assert config.ari.password == "" and config.ami.secret == ""  # no secret has a working default
    assert config.agi.secret == ""
    assert config.agi.allowed_peers == ["127.0.0.1/32", "::1"]   # FastAGI: this machine only


def test_yaml_then_environment(tmp_path):
    path = tmp_path / "hotline.yaml"
    path.write_text("api:\n  port: 9000\n  host: 0.0.0.0\nsip:\n  trunk_addresses: [10.0.0.1, 10.0.0.2]\n")
    config = load_config(path, env={"HOTLINE_API_PORT": "9100", "DATABASE_URL": "postgresql://h/db"})
    assert config.api.port == 9100 and config.sources["api.port"] == "HOTLINE_API_PORT"
    assert config.api.host == "0.0.0.0" and config.sources["api.host"] == str(path)
    assert config.sip.trunk_addresses == ["10.0.0.1", "10.0.0.2"]
    assert config.database_url == "postgresql://h/db"
    listed = load_config(env={"HOTLINE_SIP_TRUNK_ADDRESSES": "1.2.3.4, 5.6.7.0/24"})
    assert listed.sip.trunk_addresses == ["1.2.3.4", "5.6.7.0/24"]


def test_config_file_from_environment(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("api:\n  port: 9300\n")
    assert load_config(env={"HOTLINE_CONFIG": str(path)}).api.port == 9300


@pytest.mark.parametrize("text,message", [
    ("api: [1, 2]", "section 'api' must be a mapping"),
    ("api:\n  colour: red\n", "unknown setting api.colour"),
    ("api:\n  port: eighty\n", "api.port must be of type int"),
    ("api:\n  port: 70000\n", "api.port must be a port"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("api: {port: [}", "not valid YAML"),
    ("tts:\n  engine: say\n", "tts.engine must be espeak-ng or flite"),
    ("api:\n  nice: 20\n", "api.nice must be between 0 and 19"),
])
def test_bad_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "hotline.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(path, env={})


def test_bad_environment_value():
    with pytest.raises(ConfigError, match="HOTLINE_API_PORT: api.port must be of type int"):
        load_config(env={"HOTLINE_API_PORT": "x"})


def test_lab_secrets_are_generated_once(tmp_path):
    config = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path)})
    assert config.with_lab_secrets().ari.password == ""  # nothing generated unless asked
    first = config.with_lab_secrets(create=True)
    assert len(first.ari.password) >= 24 and first.ami.secret and first.ari.password != first.ami.secret
    again = config.with_lab_secrets(create=True)
    assert (again.ari.password, again.ami.secret) == (first.ari.password, first.ami.secret)
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
    explicit = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path), "HOTLINE_ARI_PASSWORD": "s3cret"})
    assert explicit.with_lab_secrets(create=True).ari.password == "s3cret"
    assert "s3cret" not in str(explicit.as_dict())


def test_the_fastagi_secret_is_a_lab_secret_like_the_others(tmp_path):
    """The FastAGI server refuses requests without agi.secret: the lab generates one, kept with the
    others, which the rendered dialplan and the server both read; it is masked like them."""
    from ivr.asterisk.agi import checked_secret

    config = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path)})
    assert config.with_lab_secrets().agi.secret == ""
    first = config.with_lab_secrets(create=True)
    assert checked_secret(first.agi.secret) and first.agi.secret not in (first.ari.password, first.ami.secret)
    assert config.with_lab_secrets().agi.secret == first.agi.secret        # what `hotline serve` reads
    assert json.loads((tmp_path / "secrets.json").read_text())["agi.secret"] == first.agi.secret
    assert first.as_dict()["agi"]["secret"] == "********"
    # A lab made before agi.secret existed gets one added, and keeps its other secrets.
    stored = json.loads((tmp_path / "secrets.json").read_text())
    del stored["agi.secret"]
    (tmp_path / "secrets.json").write_text(json.dumps(stored))
    upgraded = config.with_lab_secrets(create=True)
    assert upgraded.agi.secret and upgraded.agi.secret != first.agi.secret
    assert (upgraded.ari.password, upgraded.ami.secret) == (first.ari.password, first.ami.secret)
    explicit = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path),
                                "HOTLINE_AGI_SECRET": "operator-chosen-0123456789"})
    assert explicit.with_lab_secrets(create=True).agi.secret == "operator-chosen-0123456789"
    peers = load_config(env={"HOTLINE_AGI_ALLOWED_PEERS": "10.0.0.5, 10.0.1.0/24"})
    assert peers.agi.allowed_peers == ["10.0.0.5", "10.0.1.0/24"]


def test_every_setting_is_documented():
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert settings_markdown() in docs, "docs/configuration.md is stale: regenerate with `hotline config --markdown`"
    for setting in SETTINGS:
        assert setting.help.strip(), setting.name
