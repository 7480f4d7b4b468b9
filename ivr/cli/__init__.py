"""The ``hotline`` command.

Each feature module adds its own subcommands through ``add_cli(subparsers)``;
this file only wires them and turns known errors into one clear line and exit
status 2 (usage/configuration) or 1 (the operation failed).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ivr.config import ConfigError, load_config
from ivr.errors import CommandError


def build_parser(extra_commands=()) -> argparse.ArgumentParser:
    """The parser of every subcommand; ``extra_commands``: more ``add_cli(subparsers)`` functions
    (the composition root adds ``serve`` and ``sync``, which need the API)."""
    parser = argparse.ArgumentParser(
        prog="hotline",
        description="Hotline: self-hosted on-call telephony (Incoming Call Policies on Asterisk).",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="YAML configuration file (default: $HOTLINE_CONFIG or ./hotline.yaml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from ivr.cli import asterisk, cluster, commands, doctor

    commands.add_cli(sub)
    doctor.add_cli(sub)
    asterisk.add_cli(sub)
    cluster.add_cli(sub)
    for add_cli in extra_commands:
        add_cli(sub)
    return parser


def main(argv: list[str] | None = None, extra_commands=()) -> int:
    return run(build_parser(extra_commands), argv)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` with ``parser``, load the configuration and run the chosen command."""
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hotline: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(config.general.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(config, args) or 0)
    except ConfigError as exc:
        print(f"hotline: configuration error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


