"""End-to-end fixtures: one lab Asterisk per test session, SIP parties, an ARI client.

The session's Asterisk is its own lab instance ("e2e") on its own ports and data
directory, so it never disturbs an operator's `make run` instance (default ports). Under
pytest-xdist each worker gets its own instance and ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

import pytest

from ivr.lab.instance import Lab
from ivr.config import SETTINGS, Config
from tests.sip import parties

#: The test session's ports (the defaults of a lab are 8088, 5060, 5038, 4573, 20000-20999).
HTTP_PORT, SIP_PORT, AMI_PORT, AGI_PORT = 18088, 15060, 15038, 14573
RTP_START, RTP_END = 30000, 30999
#: The lab outbound trunk's "carrier" (a sipp phone in the tests that need one).
CARRIER_PORT = 15080
OUTBOUND_TRUNK = "lab-carrier"


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


def _port_free(proto: str, port: int) -> bool:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def make_lab_config(data_dir: Path, offset: int = 0) -> Config:
    """A configuration for a test lab instance: test ports shifted by ``offset``, its own
    data directory (random secrets), and the machine's cached root."""
    values = {s.name: s.default for s in SETTINGS}
    # Where the root is cached is a property of the machine: honour the operator's setting.
    for name in ("asterisk.root", "asterisk.suite", "asterisk.mirror"):
        env = "HOTLINE_" + name.upper().replace(".", "_")
        if os.environ.get(env):
            values[name] = os.environ[env]
    config = Config(values).replace(
        general__data_dir=str(data_dir),
        ari__url=f"http://127.0.0.1:{HTTP_PORT + offset}",
        ami__port=AMI_PORT + offset,
        agi__port=AGI_PORT + offset,
        sip__port=SIP_PORT + offset,
        sip__rtp_start=RTP_START + 10 * offset,
        sip__rtp_end=RTP_END + 10 * offset,
        sip__trunk_addresses=["127.0.0.1"],
        sip__outbound_trunk=OUTBOUND_TRUNK,
        sip__outbound_trunk_contact=f"sip:127.0.0.1:{CARRIER_PORT + offset}",
        sip__fallback_number="",
    )
    return config.with_lab_secrets(create=True)


@pytest.fixture(scope="session")
def lab_config(tmp_path_factory) -> Config:
    return make_lab_config(tmp_path_factory.mktemp("hotline-e2e-data"), offset=100 * _worker_index())


@pytest.fixture(scope="session")
def lab(lab_config) -> Lab:
    """The running lab Asterisk of this test session (with the test-only routes)."""
    if os.geteuid() != 0:
        pytest.fail("the lab Asterisk needs root (debootstrap, chroot): run `sudo make test`")
    if not parties.sipp_available():
        pytest.fail("sipp is missing: `make test` installs it (Debian package sip-tester)")
    if not shutil.which("debootstrap") and not (Path(lab_config.asterisk.root) / ".hotline-root.json").exists():
        pytest.fail("debootstrap is missing: `make test` installs it")
    worker = _worker_index()
    offset = 100 * worker
    busy = [f"{proto} {port}" for proto, port in (("tcp", HTTP_PORT + offset), ("tcp", AMI_PORT + offset),
                                                  ("udp", SIP_PORT + offset), ("udp", CARRIER_PORT + offset))
            if not _port_free(proto, port)]
    instance = f"e2e{worker or ''}"
    lab = Lab(lab_config, instance=instance)
    if busy and not lab.is_running():
        pytest.fail(f"the e2e test ports are in use by another program: {', '.join(busy)}")
    lab.up(test_routes=True)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def sip_target(lab, lab_config) -> tuple[str, int]:
    """Where callers send their INVITEs: the lab Asterisk's SIP transport."""
    return ("127.0.0.1", lab_config.sip.port)


@pytest.fixture
def carrier_port(lab_config) -> int:
    """The port of the lab outbound trunk's carrier (start a Phone there to play it)."""
    return int(lab_config.sip.outbound_trunk_contact.rsplit(":", 1)[1])


@pytest.fixture(autouse=True)
def _stop_parties():
    """Whatever a test leaves running (a failed assertion) is stopped by its pid."""
    yield
    parties.kill_all_now()


@pytest.fixture
async def ari(lab, lab_config):
    """An ARI client connected as the Stasis application of the trunk's dialplan."""
    from tests.e2e.ari_helpers import AriClient

    client = AriClient(lab_config)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def calls_database_url(tmp_path_factory) -> str:
    """The end-to-end calls' database: a migrated SQLite file of the session."""
    from ivr.store.db import migrate, run_sync

    url = f"sqlite:///{tmp_path_factory.mktemp('hotline-e2e-db') / 'hotline.db'}"
    run_sync(url, migrate)
    return url


@pytest.fixture
def hotline_config(lab_config, calls_database_url):
    """The controller's configuration: the lab's, a short confirmation window."""
    return lab_config.replace(database__url=calls_database_url, controller__confirm_timeout=3.0)


@contextlib.asynccontextmanager
async def running_hotline(make, config):
    """``make(config, db)`` started on a database pool of its own; stopped and released after."""
    from ivr.store.db import open_database

    db = open_database(config.database_url, pool_size=4)
    running = make(config, db)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()
        await db.close_pool()


@pytest.fixture
async def hotline(lab, hotline_config):
    """Hotline's call controller, connected to the lab Asterisk for one test."""
    from tests.e2e.hotline import Hotline

    async with running_hotline(Hotline, hotline_config) as running:
        yield running


@pytest.fixture
async def receiver():
    """A webhook receiver on loopback (it keeps what it got), stopped after the test."""
    from tests.e2e.test_notifications import Receiver

    hook = await Receiver().start()
    try:
        yield hook
    finally:
        await hook.runner.cleanup()
