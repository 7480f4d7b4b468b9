"""The cluster's plan (ports, RTP slices, systemnames), its refusals, and Kamailio's rendered configuration."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ivr.config import SETTINGS, Config, ConfigError
from ivr.lab.cluster import Cluster
from ivr.lab.kamailio import Node, render_kamailio


def base(tmp_path, **changes) -> Config:
    config = Config({s.name: s.default for s in SETTINGS}).replace(general__data_dir=str(tmp_path))
    return config.replace(database__url="postgresql://postgres@127.0.0.1/hotline", **changes)


def test_each_node_gets_its_ports_rtp_slice_and_systemname(tmp_path):
    plans = Cluster(base(tmp_path), 3, prefix="x-").plan()
    assert [p.instance for p in plans] == ["x-node1", "x-node2", "x-node3"]
    assert [p.systemname for p in plans] == ["hotline-x-node1", "hotline-x-node2", "hotline-x-node3"]
    assert [p.config.sip.port for p in plans] == [5070, 5080, 5090]
    assert [p.config.ari.url for p in plans] == ["http://127.0.0.1:8098", "http://127.0.0.1:8108",
                                                "http://127.0.0.1:8118"]
    assert [p.config.ami.port for p in plans] == [5048, 5058, 5068]
    assert [p.config.agi.port for p in plans] == [4583, 4593, 4603]
    assert [p.controller_port for p in plans] == [8091, 8101, 8111]
    assert [(p.config.sip.rtp_start, p.config.sip.rtp_end) for p in plans] == [
        (20000, 20332), (20333, 20665), (20666, 20998)]


def test_several_controllers_refuse_sqlite(tmp_path):
    config = base(tmp_path).replace(database__url="")
    with pytest.raises(ConfigError, match="cannot share a SQLite database.*DATABASE_URL=postgresql"):
        Cluster(config, 2)._check()
    Cluster(config, 1)._check()  # one controller may keep SQLite


def test_kamailio_must_be_a_trusted_trunk_address(tmp_path):
    with pytest.raises(ConfigError, match="must include Kamailio's address 127.0.0.1"):
        Cluster(base(tmp_path, sip__trunk_addresses=["10.0.0.1"]), 2)._check()


def test_too_small_an_rtp_range_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 100 ports"):
        Cluster(base(tmp_path, sip__rtp_start=20000, sip__rtp_end=20150), 2).plan()


def test_kamailio_config_lists_the_nodes_and_probes_them(tmp_path):
    files = render_kamailio(listen=("127.0.0.1", 5060), nodes=[Node("node1", "127.0.0.1", 5070),
                                                                 Node("node2", "127.0.0.1", 5080)],
                            run_dir=tmp_path, ping_interval=1, invite_timeout=1.5)
    cfg = files["kamailio.cfg"]
    assert "listen=udp:127.0.0.1:5060" in cfg
    assert 'modparam("dispatcher", "ds_ping_interval", 1)' in cfg
    assert 'modparam("tm", "fr_timer", 1500)' in cfg
    assert 'ds_select_dst("1", "4", "2")' in cfg and "ds_next_dst()" in cfg
    assert "{{" not in cfg
    assert files["dispatcher.list"].splitlines()[2:] == ["1 sip:127.0.0.1:5070 0 0 duid=node1",
                                                         "1 sip:127.0.0.1:5080 0 0 duid=node2"]
    if shutil.which("kamailio"):
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        check = subprocess.run(["kamailio", "-c", "-f", str(tmp_path / "kamailio.cfg")], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stderr[-2000:]


def test_kamailio_config_refuses_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="IP address"):
        render_kamailio(listen=("sip.example.com", 5060), nodes=[Node("n", "127.0.0.1", 5070)], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="at least one Asterisk node"):
        render_kamailio(listen=("127.0.0.1", 5060), nodes=[], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot share"):
        render_kamailio(listen=("127.0.0.1", 5060), nodes=[Node("n", "127.0.0.1", 5060)], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown dispatching algorithm"):
        render_kamailio(listen=("127.0.0.1", 5060), nodes=[Node("n", "127.0.0.1", 5070)], run_dir=tmp_path,
                        algorithm="random")
