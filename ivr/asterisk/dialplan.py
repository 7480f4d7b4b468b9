"""Asterisk's configuration for Hotline, rendered from ``asterisk-conf/`` and Hotline's configuration.

The same files serve the lab (``hotline asterisk up`` writes them into an instance directory) and an
Asterisk an operator runs (``hotline asterisk render DIR``). Every value written into a ``.conf``
file is checked here: no ``;``, no line break, names that are names, addresses that are addresses.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ivr.asterisk.agi import checked_secret
from ivr.asterisk.dialstrings import endpoint_for, safe_in_dialplan
from ivr.config import Config, ConfigError, connect_host

#: Where the templates live (the repository's asterisk-conf/).
CONF_DIR = Path(os.environ.get("HOTLINE_ASTERISK_CONF_DIR")
                or Path(__file__).resolve().parents[2] / "asterisk-conf")
#: The source address of the lab's test caller (the test-only trunk of pjsip_lab.conf).
LAB_CALLER_ADDRESS = "127.0.0.3"
FALLBACK_DIAL_TIMEOUT = 30               # seconds the fallback number rings
#: The longest dialed number and caller ID the dialplan passes on (the width of the logs' number
#: columns; E.164 numbers have at most 16 characters).
DIALED_MAX = CALLER_MAX = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_E164_RE = re.compile(r"^\+?[0-9]{3,15}$")
_SIP_URI_RE = re.compile(r"^sips?:[A-Za-z0-9_.!~*'()&=+$,;?/%:@\[\]-]+$")


def _conf_value(name: str, value: Any) -> str:
    """A value safe to write after ``key =`` in an Asterisk configuration file."""
    text = str(value)
    if any(ch in text for ch in "\r\n;") or text != text.strip():
        raise ConfigError(f"{name} must not contain ';', line breaks or surrounding spaces "
                          f"(it is written into Asterisk's configuration)")
    return text


def _conf_name(name: str, value: str) -> str:
    if not _NAME_RE.match(value or ""):
        raise ConfigError(f"{name} must be a simple name (letters, digits, '_', '.', '-'), got {value!r}")
    return value


def ip_setting(name: str, value: str, allow_any: bool = True) -> str:
    if value == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name} must be an IP address (the lab never uses DNS), got {value!r}") from None
    if addr.is_unspecified and not allow_any:
        raise ConfigError(f"{name} must be a concrete address, got {value!r}")
    return str(addr)


def ari_address(config: Config) -> tuple[str, int]:
    url = urlsplit(config.ari.url)
    if url.scheme != "http":
        raise ConfigError(f"ari.url must be http://HOST:PORT for the lab Asterisk, got {config.ari.url!r}")
    host = ip_setting("ari.url host", url.hostname or "127.0.0.1")
    try:
        port = url.port or 80
    except ValueError:
        raise ConfigError(f"ari.url has an invalid port: {config.ari.url!r}") from None
    return host, port


def fallback_dial_string(config: Config) -> str:
    """The Dial() target of sip.fallback_number ('' when none), by the one dial-string rule
    (ivr.asterisk.dialstrings)."""
    number = (config.sip.fallback_number or "").strip()
    if not number:
        return ""
    if number.startswith(("sip:", "sips:")):
        if not _SIP_URI_RE.match(number) or not safe_in_dialplan(number):
            raise ConfigError(f"sip.fallback_number is not a usable SIP URI: {number!r}")
        return endpoint_for(number, config.sip.outbound_trunk)
    compact = re.sub(r"[\s().-]", "", number)
    if not _E164_RE.match(compact):
        raise ConfigError(f"sip.fallback_number must be an E.164 number or a sip: URI, got {number!r}")
    if not config.sip.outbound_trunk:
        raise ConfigError("sip.fallback_number is a phone number but sip.outbound_trunk is empty: "
                          "set the PJSIP endpoint of the carrier that dials it, or use a sip: URI")
    return endpoint_for(compact, _conf_name("sip.outbound_trunk", config.sip.outbound_trunk))


def _template(name: str) -> str:
    path = CONF_DIR / name
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the Asterisk configuration template {path}: {exc.strerror} "
                          f"(set HOTLINE_ASTERISK_CONF_DIR to the repository's asterisk-conf/)") from None


def _fill(name: str, text: str, values: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"{name}: unknown placeholder {{{{{key}}}}}")
        return values[key]
    return re.sub(r"\{\{\s*([a-z_]+)\s*\}\}", sub, text)


#: Core settings Hotline does not change: the Debian package's files, copied as they are
#: (tones by country, Stasis task pools, ...); without them Asterisk logs errors at startup.
PACKAGE_DEFAULT_FILES = ("indications.conf", "stasis.conf", "features.conf", "acl.conf", "udptl.conf",
                         "pjproject.conf", "ccss.conf", "cel.conf", "websocket_client.conf")

MAIN_FILES = ("http.conf", "ari.conf", "manager.conf", "pjsip.conf", "extensions.conf",
              "modules.conf", "rtp.conf", "logger.conf", "cdr.conf")
LAB_FILES = ("pjsip_lab.conf", "extensions_lab.conf")


def find_moddir(root: Path = Path("/")) -> str | None:
    """Where Debian's asterisk package keeps its modules under ``root`` (as Asterisk sees it, from
    inside ``root``), whatever the architecture; None when Asterisk is not installed there."""
    found = sorted(root.glob("usr/lib/*/asterisk/modules"))
    return "/" + str(found[0].relative_to(root)) if found else None


def package_default_files(etc_dir: Path) -> dict[str, str]:
    """The files of :data:`PACKAGE_DEFAULT_FILES` found in ``etc_dir`` (the package's own
    /etc/asterisk), unchanged."""
    return {name: (etc_dir / name).read_text() for name in PACKAGE_DEFAULT_FILES if (etc_dir / name).is_file()}


def render_config(config: Config, *, test_routes: bool = False, instance_dir: str | None = None,
                  moddir: str = "/usr/lib/x86_64-linux-gnu/asterisk/modules",
                  systemname: str = "hotline", asterisk_conf: bool = False) -> dict[str, str]:
    """Asterisk's configuration files for ``config``: {file name: text}.

    ``config`` must carry its secrets (``config.with_lab_secrets(create=True)``).
    ``instance_dir`` (the instance directory as Asterisk sees it) adds the lab's
    asterisk.conf; ``test_routes`` adds the lab's test-only routes. ``asterisk_conf``
    (without ``instance_dir``) adds the asterisk.conf of an Asterisk in Debian's standard
    directories (the docker-compose image), named ``systemname``.
    """
    if not config.ari.password or not config.ami.secret or not config.agi.secret:
        raise ConfigError("ari.password, ami.secret or agi.secret is empty: use config.with_lab_secrets(create=True) "
                          "or set HOTLINE_ARI_PASSWORD / HOTLINE_AMI_SECRET / HOTLINE_AGI_SECRET")
    http_host, http_port = ari_address(config)
    trunk_lines = []
    for address in config.sip.trunk_addresses:
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ConfigError(f"sip.trunk_addresses: {address!r} is not an IP address or network "
                              f"(the trunk is identified by address; names would need DNS)") from None
        trunk_lines.append(f"match = {network}")
    if not trunk_lines:
        trunk_lines.append("; (sip.trunk_addresses is empty: no inbound call is accepted)")
        trunk_lines.append("match = 192.0.2.1/32")

    outbound = "; sip.outbound_trunk is empty: only SIP URIs can be rung."
    if config.sip.outbound_trunk:
        trunk = _conf_name("sip.outbound_trunk", config.sip.outbound_trunk)
        contact = (config.sip.outbound_trunk_contact or "").strip()
        if contact:
            if not _SIP_URI_RE.match(contact):
                raise ConfigError(f"sip.outbound_trunk_contact must be a sip: URI, got {contact!r}")
            outbound = "\n".join([
                f"; The outbound trunk {trunk!r} (sip.outbound_trunk), towards",
                "; sip.outbound_trunk_contact.",
                f"[{trunk}](hotline-outbound-trunk)",
                f"aors = {trunk}",
                "",
                f"[{trunk}]",
                "type = aor",
                f"contact = {contact}",
            ])
        else:
            outbound = (f"; sip.outbound_trunk = {trunk}: define the endpoint {trunk!r} from the template\n"
                        f"; above (sip.outbound_trunk_contact defines it in the lab).")

    ami_bind = ip_setting("ami.host", config.ami.host)
    values = {
        "http_bind": http_host,
        "http_port": str(http_port),
        "ari_username": _conf_name("ari.username", config.ari.username),
        "ari_password": _conf_value("ari.password", config.ari.password),
        "ari_app": _conf_name("ari.app", config.ari.app),
        "ami_bind": ami_bind,
        "ami_port": str(int(config.ami.port)),
        "ami_username": _conf_name("ami.username", config.ami.username),
        "ami_secret": _conf_value("ami.secret", config.ami.secret),
        "agi_host": connect_host(ip_setting("agi.host", config.agi.host)),
        "agi_port": str(int(config.agi.port)),
        "agi_secret": checked_secret(config.agi.secret),
        "dialed_max": str(DIALED_MAX),
        "caller_max": str(CALLER_MAX),
        "sip_bind": ip_setting("sip.bind", config.sip.bind),
        "sip_port": str(int(config.sip.port)),
        "trunk_matches": "\n".join(trunk_lines),
        "outbound_trunk": outbound,
        "rtp_start": str(int(config.sip.rtp_start)),
        "rtp_end": str(int(config.sip.rtp_end)),
        "fallback_dial": fallback_dial_string(config),
        "fallback_timeout": str(FALLBACK_DIAL_TIMEOUT),
        "lab_caller_address": LAB_CALLER_ADDRESS,
        "inst": instance_dir or "",
        "moddir": _conf_value("moddir", moddir),
        "systemname": _conf_name("instance", systemname),
    }
    files: dict[str, str] = {}
    for name in MAIN_FILES:
        text = _template(name)
        include = ""
        if test_routes and name in ("pjsip.conf", "extensions.conf"):
            lab_file = name.replace(".conf", "_lab.conf")
            include = f"; Test sessions only (Lab.up(test_routes=True)):\n#include {lab_file}"
        values["lab_include"] = include
        files[name] = _fill(name, text, values)
    if test_routes:
        for name in LAB_FILES:
            files[name] = _fill(name, _template(f"lab/{name}"), values)
    if instance_dir:
        files["asterisk.conf"] = _fill("asterisk.conf", _template("lab/asterisk.conf"), values)
    elif asterisk_conf:
        files["asterisk.conf"] = _fill("asterisk.conf", _template("asterisk.conf"), values)
    return files
