"""``hotline asterisk up|down|status|cli|render``: the lab Asterisk from the command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ivr.asterisk.dialplan import render_config
from ivr.config import Config
from ivr.lab.instance import Lab


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "asterisk", help="the lab Asterisk: up, down, status, cli",
        description="A real Asterisk for development and tests, in a cached Debian root "
                    "(built with debootstrap on first use; needs root).")
    sub = parser.add_subparsers(dest="asterisk_command", metavar="ACTION")
    sub.required = True

    def instance_arg(p):
        p.add_argument("--instance", default="default", metavar="NAME",
                       help="lab instance (several can run side by side on different ports); default: default")

    p = sub.add_parser("up", help="build if needed, start, wait until ARI answers (idempotent)")
    instance_arg(p)
    p.add_argument("--test-routes", action="store_true",
                   help="also load the plain test routes used by the test harness and benchmarks")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("down", help="stop the Asterisk this command started")
    instance_arg(p)
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser("status", help="version, and whether ARI, AMI and SIP answer")
    instance_arg(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("cli", help='run an Asterisk CLI command, e.g. "core show channels"')
    instance_arg(p)
    p.add_argument("cli_command", metavar="COMMAND", help="the command, quoted")
    p.set_defaults(func=_cmd_cli)

    p = sub.add_parser("render", help="write the rendered Asterisk configuration to a directory "
                                      "(for an Asterisk you run yourself)")
    p.add_argument("directory", help="where to write the .conf files")
    p.set_defaults(func=_cmd_render)


def _progress(message: str) -> None:
    print(f"hotline: {message}", file=sys.stderr, flush=True)


def _print_status(status: dict) -> None:
    state = (f"running, pid {status['pid']}" if status["running"] else "not running")
    version = status["version"] or "unknown version"
    print(f"Asterisk {version} - lab instance {status['instance']!r}: {state}")
    print(f"  root  {status['root']}{'' if status['root_ready'] else ' (not built yet)'}")
    print(f"  ARI   {status['ari']['url']:<28} {status['ari'].get('detail', '')}")
    print(f"  AMI   {status['ami']['address']:<28} {status['ami'].get('detail', '')}")
    print(f"  SIP   {status['sip']['address']:<28} {status['sip'].get('detail', '')}")
    print(f"  logs  {status['log_dir']}")


def _cmd_up(config: Config, args) -> int:
    started = time.monotonic()
    status = Lab(config, args.instance, progress=_progress).up(test_routes=args.test_routes)
    _print_status(status)
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


def _cmd_down(config: Config, args) -> int:
    stopped = Lab(config, args.instance, progress=_progress).down()
    print(f"lab Asterisk {args.instance!r} {'stopped' if stopped else 'was not running'}")
    return 0


def _cmd_status(config: Config, args) -> int:
    status = Lab(config, args.instance).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    ok = status["running"] and all(status[k]["ok"] for k in ("ari", "ami", "sip"))
    return 0 if ok else 1


def _cmd_cli(config: Config, args) -> int:
    sys.stdout.write(Lab(config, args.instance).cli(args.cli_command))
    return 0


def _cmd_render(config: Config, args) -> int:
    files = render_config(config.with_lab_secrets(create=True))
    out = Path(args.directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    print(f"wrote {', '.join(sorted(files))} to {out}")
    return 0
