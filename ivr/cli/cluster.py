"""``hotline cluster up|down|status``: several lab Asterisk nodes behind Kamailio on this machine, one
call controller per node, one shared PostgreSQL database (docs/deployment.md)."""

from __future__ import annotations

import json
import sys
import time

from ivr.config import Config
from ivr.lab.cluster import Cluster
from ivr.lab.kamailio import ALGORITHMS


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "cluster", help="several lab Asterisk nodes behind Kamailio, one controller each: up, down, status",
        description="Scale-out on one machine: lab Asterisk nodes (instances <prefix>node1..N), Kamailio as "
                    "their SIP entry point on sip.bind:sip.port, and one `hotline serve --controller-only` per "
                    "node, sharing the PostgreSQL database of DATABASE_URL (needs root, like the lab).")
    sub = parser.add_subparsers(dest="cluster_command", metavar="ACTION")
    sub.required = True

    def common(p, nodes_default: int | None):
        p.add_argument("--nodes", type=int, default=nodes_default, metavar="N",
                       help="Asterisk nodes (default: 2 for up; what up recorded otherwise)")
        p.add_argument("--prefix", default="", metavar="TEXT",
                       help="prefix of the nodes' instance names (<prefix>node1, ...): several clusters side by side")
        p.add_argument("--port-step", type=int, default=10, metavar="N",
                       help="node i's ARI, AMI, AGI, SIP and controller ports are the configuration's + N x i "
                            "(default 10)")
        p.add_argument("--database-url", metavar="URL",
                       help="the controllers' shared database (default: database.url / DATABASE_URL)")

    p = sub.add_parser("up", help="start the nodes, their controllers and Kamailio (idempotent)")
    common(p, 2)
    p.add_argument("--ping-interval", type=int, default=1, metavar="S",
                   help="seconds between Kamailio's OPTIONS probes of each node (default 1)")
    p.add_argument("--invite-timeout", type=float, default=2.0, metavar="S",
                   help="seconds a node has to answer an INVITE (100 Trying) before the next node is tried "
                        "(default 2)")
    p.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="round-robin",
                   help="how new calls are spread over the nodes (default round-robin)")
    p.add_argument("--test-routes", action="store_true", help="also load the lab's test-only routes")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("down", help="stop exactly what `up` started (by pid)")
    common(p, None)
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser("status", help="each part, and whether it answers")
    common(p, None)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_cmd_status)


def _progress(message: str) -> None:
    print(f"hotline: {message}", file=sys.stderr, flush=True)


def _cluster(config: Config, args, **options) -> Cluster:
    if args.database_url:
        config = config.replace(database__url=args.database_url)
    nodes = args.nodes
    if nodes is None:
        recorded = Cluster(config, 1, prefix=args.prefix, port_step=args.port_step).read_state()
        nodes = len(recorded.get("nodes") or []) or 2
    return Cluster(config, nodes, prefix=args.prefix, port_step=args.port_step, progress=_progress, **options)


def _print_status(status: dict) -> None:
    kam = status["kamailio"]
    print(f"cluster: {'ok' if status['ok'] else 'NOT OK'} (database {status['database']})")
    state = f"running, pid {kam['pid']}" if kam["running"] else "not running"
    print(f"  kamailio  {kam['address']:<24} {state}; OPTIONS: {kam['sip']['detail']}")
    for view in kam.get("nodes") or []:
        print(f"            dispatches to {view['uri']:<24} {'active' if view['active'] else 'INACTIVE'} "
              f"({view['flags']})")
    for node in status["nodes"]:
        ast, ctl = node["asterisk"], node["controller"]
        print(f"  {node['instance']:<9} {node['systemname']}: SIP {node['sip']}, RTP {node['rtp']}")
        state = f"running, pid {ast['pid']}" if ast["running"] else "not running"
        print(f"    asterisk    {state}; {ast['detail']}")
        state = f"running, pid {ctl['pid']}" if ctl["running"] else "not running"
        print(f"    controller  {ctl['url']:<24} {state}; {ctl['detail']}")
    print(f"  state     {status['state']}")


def _cmd_up(config: Config, args) -> int:
    started = time.monotonic()
    cluster = _cluster(config, args, ping_interval=args.ping_interval, invite_timeout=args.invite_timeout,
                       algorithm=args.algorithm)
    status = cluster.up(test_routes=args.test_routes)
    _print_status(status)
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0 if status["ok"] else 1


def _cmd_down(config: Config, args) -> int:
    stopped = _cluster(config, args).down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _cmd_status(config: Config, args) -> int:
    status = _cluster(config, args).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    return 0 if status["ok"] else 1
