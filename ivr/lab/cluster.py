"""Several lab Asterisk nodes behind Kamailio on one machine, one call controller per node, one
PostgreSQL database: ``hotline cluster up|down|status``.

For ``--nodes N`` (node i = 1..N, instance ``<prefix>node<i>``, systemname ``hotline-<prefix>node<i>``):

- each node is a lab instance (:class:`ivr.lab.instance.Lab`) whose ports are the configuration's
  (``ari.url``, ``ami.port``, ``agi.port``, ``sip.port``) shifted by ``port_step * i``, and whose RTP
  range is the i-th of N equal slices of ``sip.rtp_start``-``sip.rtp_end``;
- Kamailio listens on ``sip.bind``:``sip.port`` (the address carriers send calls to) and dispatches new
  INVITEs over the nodes (:mod:`ivr.lab.kamailio`); the nodes take calls from it as from their trunk
  (its address must be in ``sip.trunk_addresses``);
- one ``hotline serve --controller-only`` per node, with that node's ARI/AMI/AGI settings, its HTTP
  server (health, ``/api/ready``, ``/metrics``) on ``controller.port + port_step * i``, all on the
  same database, which must be PostgreSQL when there are several.

What ``up`` started is recorded (pid and process start time) in ``<data_dir>/cluster[-prefix]/state.json``;
``down`` stops exactly that, by pid, never by name, and a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import yaml

from ivr.asterisk.dialplan import ari_address, ip_setting
from ivr.config import Config, ConfigError, connect_host
from ivr.lab.instance import Lab
from ivr.lab.kamailio import Kamailio, Node
from ivr.lab.processes import is_alive, port_free, read_state, start_time, stop_process
from ivr.lab.rootfs import fail

CONTROLLER_START_TIMEOUT = 45.0
CONTROLLER_STOP_TIMEOUT = 20.0
#: controller.ari_lost_after of a cluster's controllers when the configuration leaves it at 0 (never).
CLUSTER_ARI_LOST_AFTER = 30.0
#: The repository root: the controllers run ``python -m ivr.main`` from it.
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class NodePlan:
    """One node: its lab instance, its configuration (ports, RTP range) and its controller's port."""

    index: int
    instance: str
    config: Config
    controller_port: int

    @property
    def systemname(self) -> str:
        return f"hotline-{self.instance}"

    @property
    def sip(self) -> tuple[str, int]:
        return connect_host(ip_setting("sip.bind", self.config.sip.bind)), int(self.config.sip.port)

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"


class Cluster:
    """The cluster ``config`` describes: ``nodes`` Asterisk nodes, Kamailio, one controller per node."""

    def __init__(self, config: Config, nodes: int = 2, *, prefix: str = "", port_step: int = 10,
                 ping_interval: int = 1, invite_timeout: float = 2.0, algorithm: str = "round-robin",
                 progress: Callable[[str], None] | None = None):
        if nodes < 1:
            raise ConfigError("a cluster has at least one node (--nodes)")
        if port_step < 1:
            raise ConfigError("--port-step must be positive")
        self.config = config
        self.count = nodes
        self.prefix = prefix
        self.port_step = port_step
        self.progress = progress or (lambda message: None)
        self.dir = config.data_dir / (f"cluster-{prefix.rstrip('-')}" if prefix else "cluster")
        self.state_path = self.dir / "state.json"
        self.kamailio_options = {"ping_interval": ping_interval, "invite_timeout": invite_timeout,
                                 "algorithm": algorithm}
        self._controllers: dict[str, subprocess.Popen] = {}

    # ----------------------------------------------------------------------- the plan
    def plan(self, count: int | None = None) -> list[NodePlan]:
        count = count or self.count
        base = self.config
        _, ari_port = ari_address(base)
        url = urlsplit(base.ari.url)
        span = (int(base.sip.rtp_end) - int(base.sip.rtp_start) + 1) // count
        if span < 100:
            raise ConfigError(f"sip.rtp_start-sip.rtp_end ({base.sip.rtp_start}-{base.sip.rtp_end}) is split "
                              f"between the {count} nodes: give each at least 100 ports")
        plans = []
        for i in range(1, count + 1):
            shift = self.port_step * i
            netloc = f"{url.hostname}:{ari_port + shift}"
            start = int(base.sip.rtp_start) + (i - 1) * span
            node_config = base.replace(
                ari__url=urlunsplit((url.scheme, netloc, url.path, "", "")),
                ami__port=int(base.ami.port) + shift,
                agi__port=int(base.agi.port) + shift,
                sip__port=int(base.sip.port) + shift,
                sip__rtp_start=start,
                sip__rtp_end=start + span - 1,
                # A dead node never comes back to be reconciled: its controller closes its calls.
                controller__ari_lost_after=float(base.controller.ari_lost_after) or CLUSTER_ARI_LOST_AFTER,
            )
            plans.append(NodePlan(i, f"{self.prefix}node{i}", node_config, int(base.controller.port) + shift))
        return plans

    def kamailio(self, plans: list[NodePlan] | None = None) -> Kamailio:
        plans = plans or self.plan()
        listen = (connect_host(ip_setting("sip.bind", self.config.sip.bind)), int(self.config.sip.port))
        return Kamailio(self.dir / "kamailio", listen=listen,
                        nodes=[Node(p.instance, *p.sip) for p in plans], **self.kamailio_options)

    def _check(self) -> None:
        url = self.config.database_url
        if self.count > 1 and not url.startswith(("postgresql://", "postgres://", "postgresql+")):
            raise ConfigError(f"{self.count} call controllers cannot share a SQLite database ({url}): set "
                              f"DATABASE_URL=postgresql://USER@HOST/DB (or --database-url), and run "
                              f"`hotline migrate` on it first")
        kam_host = ipaddress.ip_address(connect_host(ip_setting("sip.bind", self.config.sip.bind)))
        trusted = []
        for address in self.config.sip.trunk_addresses:
            with contextlib.suppress(ValueError):
                trusted.append(ipaddress.ip_network(address, strict=False))
        if not any(kam_host in net for net in trusted):
            raise ConfigError(f"the nodes take calls only from sip.trunk_addresses "
                              f"({', '.join(self.config.sip.trunk_addresses) or 'none'}), which must include "
                              f"Kamailio's address {kam_host} (sip.bind)")

    # ------------------------------------------------------------------------ state
    def read_state(self) -> dict:
        return read_state(self.state_path) or {}

    def _write_state(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    # --------------------------------------------------------------------------- up
    def up(self, test_routes: bool = False) -> dict:
        """Start what is not running (nodes, then controllers, then Kamailio); keep what runs with the
        same configuration. Returns :meth:`status`."""
        self._check()
        self.config = self.config.with_lab_secrets(create=True)
        plans = self.plan()
        state = self.read_state()
        if state.get("nodes") and len(state["nodes"]) != self.count:
            raise fail(f"the cluster runs {len(state['nodes'])} node(s); stop it first (`hotline cluster down`) "
                       f"to change that to {self.count}")
        state.setdefault("controllers", {})
        state["nodes"] = [p.instance for p in plans]
        state["prefix"] = self.prefix
        state["port_step"] = self.port_step
        self._write_state(state)
        for plan in plans:
            self.progress(f"node {plan.instance}: Asterisk on SIP {plan.sip[0]}:{plan.sip[1]}, "
                          f"RTP {plan.config.sip.rtp_start}-{plan.config.sip.rtp_end}")
            Lab(plan.config, plan.instance, progress=self.progress).up(test_routes=test_routes)
        for plan in plans:
            state["controllers"][plan.instance] = self._ensure_controller(plan, state["controllers"].get(plan.instance))
            self._write_state(state)
        for plan in plans:
            self._wait_controller_ready(plan, state["controllers"][plan.instance])
        kam = self.kamailio(plans)
        self.progress(f"Kamailio on udp {kam.listen[0]}:{kam.listen[1]} in front of "
                      f"{', '.join(p.instance for p in plans)}")
        kam.start()
        state["kamailio"] = kam.read_state()
        self._write_state(state)
        return self.status()

    def _controller_files(self, plan: NodePlan) -> tuple[dict, str]:
        values = plan.config.replace(api__host="127.0.0.1", api__port=plan.controller_port).as_dict(
            reveal_secrets=True)
        digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
        return values, digest

    def _ensure_controller(self, plan: NodePlan, entry: dict | None) -> dict:
        values, digest = self._controller_files(plan)
        if entry and is_alive(entry):
            if entry.get("digest") == digest:
                self.progress(f"controller of {plan.instance} is already running (pid {entry['pid']})")
                return entry
            self.progress(f"restarting the controller of {plan.instance} (configuration changed)")
            stop_process(entry["pid"], entry["starttime"], self._controllers.get(plan.instance),
                         CONTROLLER_STOP_TIMEOUT)
        if not port_free("tcp", "127.0.0.1", plan.controller_port):
            raise fail(f"port {plan.controller_port}/tcp is in use, so the controller of {plan.instance} cannot "
                       f"listen there: stop that program or change controller.port (nodes use controller.port + "
                       f"{self.port_step} x node)")
        self.dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / f"controller-{plan.instance}.yaml"
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# Written by `hotline cluster up`: the controller of node " + plan.instance + ".\n")
            yaml.safe_dump(values, fh)
        log_path = self.dir / f"controller-{plan.instance}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_") and k != "DATABASE_URL"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        cmd = [sys.executable, "-m", "ivr.main", "--config", str(config_file), "serve", "--controller-only"]
        with open(log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%F %T')} hotline cluster up: {' '.join(cmd[1:])} =====\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(self.dir), start_new_session=True, close_fds=True)
        self._controllers[plan.instance] = proc
        starttime = None
        for _ in range(200):
            starttime = start_time(proc.pid)
            if starttime is not None:
                break
            time.sleep(0.01)
        self.progress(f"controller of {plan.instance} started (pid {proc.pid}, http://127.0.0.1:{plan.controller_port})")
        return {"pid": proc.pid, "starttime": starttime, "digest": digest, "port": plan.controller_port,
                "log": str(log_path), "started_at": time.time()}

    def _wait_controller_ready(self, plan: NodePlan, entry: dict) -> None:
        deadline = time.monotonic() + CONTROLLER_START_TIMEOUT
        while True:
            ready = controller_ready(plan.controller_url)
            if ready["ok"]:
                return
            if not is_alive(entry):
                raise fail(f"the controller of {plan.instance} exited at startup: {_tail(Path(entry['log']))} "
                           f"(full log: {entry['log']})")
            if time.monotonic() > deadline:
                raise fail(f"the controller of {plan.instance} is not ready after {CONTROLLER_START_TIMEOUT:.0f} s "
                           f"({ready['detail']}); see {entry['log']}")
            time.sleep(0.1)

    # ------------------------------------------------------------------------- down
    def down(self) -> list[str]:
        """Stop what ``up`` recorded: Kamailio (no new calls), the controllers, the nodes. Returns what
        was stopped."""
        state = self.read_state()
        stopped = []
        count = len(state.get("nodes") or []) or self.count
        plans = self.plan(count)
        if state.get("kamailio") and self.kamailio(plans).stop():
            stopped.append("kamailio")
        for instance, entry in (state.get("controllers") or {}).items():
            if stop_process(entry["pid"], entry["starttime"], self._controllers.pop(instance, None),
                            CONTROLLER_STOP_TIMEOUT):
                stopped.append(f"controller {instance}")
        for instance in state.get("nodes") or []:
            plan = next((p for p in plans if p.instance == instance), None)
            if plan is None:
                continue
            if Lab(plan.config, instance, progress=self.progress).down():
                stopped.append(f"node {instance}")
        self.state_path.unlink(missing_ok=True)
        return stopped

    # ----------------------------------------------------------------------- status
    def status(self) -> dict:
        state = self.read_state()
        count = len(state.get("nodes") or []) or self.count
        plans = self.plan(count)
        kam = self.kamailio(plans).status()
        nodes = []
        for plan in plans:
            lab = Lab(plan.config, plan.instance).status()
            entry = (state.get("controllers") or {}).get(plan.instance)
            running = bool(entry) and is_alive(entry)
            nodes.append({
                "instance": plan.instance, "systemname": plan.systemname,
                "sip": f"{plan.sip[0]}:{plan.sip[1]}", "rtp": f"{plan.config.sip.rtp_start}-{plan.config.sip.rtp_end}",
                "asterisk": {"running": lab["running"], "pid": lab["pid"],
                             "ok": lab["running"] and all(lab[k]["ok"] for k in ("ari", "ami", "sip")),
                             "detail": "; ".join(f"{k.upper()} {lab[k]['detail']}" for k in ("ari", "ami", "sip"))},
                "controller": {"running": running, "pid": entry["pid"] if running else None,
                               "url": plan.controller_url, **controller_ready(plan.controller_url)},
            })
        ok = kam["running"] and kam["sip"]["ok"] and all(n["asterisk"]["ok"] and n["controller"]["ok"] for n in nodes)
        return {"ok": ok, "kamailio": kam, "nodes": nodes, "database": _safe_url(self.config.database_url),
                "state": str(self.state_path)}


def controller_ready(url: str, timeout: float = 2.0) -> dict:
    """A controller's ``/api/ready``: {"ok": bool, "detail": str}."""
    try:
        with urllib.request.urlopen(f"{url}/api/ready", timeout=timeout) as resp:
            return {"ok": resp.status == 200, "detail": "ready"}
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
            failing = [f"{k}: {v.get('detail', '')}" for k, v in (body.get("checks") or {}).items() if not v.get("ok")]
        except (ValueError, AttributeError):
            failing = []
        return {"ok": False, "detail": "not ready: " + ("; ".join(failing) or f"HTTP {exc.code}")}
    except (OSError, ValueError) as exc:
        return {"ok": False, "detail": f"does not answer ({getattr(exc, 'reason', exc)})"}


def _tail(path: Path, lines: int = 4) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    interesting = [line for line in text if "ERROR" in line or "error" in line] or text
    return " | ".join(line.strip() for line in interesting[-lines:])


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return url
