"""``hotline asterisk up|down|status|cli|render|ping``: the lab Asterisk from the command line, and the
configuration of an Asterisk run outside the lab.

``python -m ivr.cli.asterisk render|ping ...`` runs the same commands with nothing but this module's
imports (no database driver, no aiohttp): the docker-compose Asterisk image renders its configuration
at start and checks its health that way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ivr import health
from ivr.asterisk.dialplan import ari_address, find_moddir, ip_setting, package_default_files, render_config
from ivr.config import LAB_SECRETS, Config, ConfigError, connect_host
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
    p.add_argument("--require-secrets", action="store_true",
                   help="take ari.password, ami.secret and agi.secret from the configuration only, and fail "
                        "when one is empty (default: generate the local lab's when empty)")
    p.add_argument("--systemname", metavar="NAME",
                   help="also write asterisk.conf (Debian's standard directories) naming this Asterisk NAME")
    p.add_argument("--moddir", metavar="DIR",
                   help="with --systemname: Asterisk's modules directory (default: found under /usr/lib)")
    p.add_argument("--package-conf", metavar="DIR",
                   help="also copy the files Hotline keeps as Debian's asterisk package ships them "
                        "(indications.conf, stasis.conf, ...) from DIR, the package's own /etc/asterisk")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("ping", help="whether the configured Asterisk answers ARI and AMI with the configured "
                                    "credentials (exit status 1 unless both do)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="per check; default 3")
    p.set_defaults(func=_cmd_ping)


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
    if args.require_secrets:
        missing = [name for name in LAB_SECRETS if not config.get(name)]
        if missing:
            raise ConfigError(f"{', '.join(missing)} empty: set "
                              + ", ".join("HOTLINE_" + name.replace(".", "_").upper() for name in missing))
    else:
        config = config.with_lab_secrets(create=True)
    extra = {}
    if args.systemname:
        moddir = args.moddir or find_moddir()
        if moddir is None:
            raise ConfigError("--systemname writes asterisk.conf, which names the modules' directory: "
                              "install Asterisk (Debian's asterisk package) on this machine first")
        extra = {"asterisk_conf": True, "systemname": args.systemname, "moddir": moddir}
    files = render_config(config, **extra)
    if args.package_conf:
        defaults = package_default_files(Path(args.package_conf))
        if not defaults:
            raise ConfigError(f"--package-conf {args.package_conf}: none of the package's files is there")
        files.update(defaults)
    out = Path(args.directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    print(f"wrote {', '.join(sorted(files))} to {out}")
    return 0


def _cmd_ping(config: Config, args) -> int:
    config = config.with_lab_secrets()
    host, port = ari_address(config)
    ari = health.ari_info(f"http://{connect_host(host)}:{port}", config.ari.username, config.ari.password,
                          args.timeout)
    ami_host = connect_host(ip_setting("ami.host", config.ami.host))
    ami = health.ami_login(ami_host, int(config.ami.port), config.ami.username, config.ami.secret, args.timeout)
    print(f"ARI  {connect_host(host)}:{port}  {'ok' if ari.ok else 'FAILING'}: {ari.detail}")
    print(f"AMI  {ami_host}:{config.ami.port}  {'ok' if ami.ok else 'FAILING'}: {ami.detail}")
    return 0 if ari.ok and ami.ok else 1


def standalone_main(argv: list[str] | None = None) -> int:
    """``python -m ivr.cli.asterisk ACTION ...``: ``hotline asterisk ACTION ...`` without the rest of
    the ``hotline`` command (and so without its dependencies)."""
    import argparse

    from ivr import cli

    parser = argparse.ArgumentParser(prog="python -m ivr.cli.asterisk",
                                     description="`hotline asterisk` alone (render, ping, ...); the configuration "
                                                 "is $HOTLINE_CONFIG or ./hotline.yaml, and HOTLINE_* variables")
    parser.set_defaults(config=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_cli(sub)
    return cli.run(parser, ["asterisk", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(standalone_main())
