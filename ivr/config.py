"""Hotline's configuration: one table of settings, read from YAML and the environment.

The table below is the single source for the loader, ``hotline config`` and the
docs (datasette's habit): a setting that is not in the table does not exist.
Precedence, lowest first: the default, the YAML file, the environment variable
``HOTLINE_<SECTION>_<KEY>`` (``DATABASE_URL`` also sets ``database.url``).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: Any
    type: str  # "str" | "int" | "float" | "bool" | "list" | "map" (of str to number)
    help: str
    secret: bool = False

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return f"HOTLINE_{self.section.upper()}_{self.key.upper()}"

    def parse(self, raw: Any, origin: str) -> Any:
        """Turn a YAML value or an environment string into this setting's type."""
        try:
            if raw is None:
                return None
            if self.type == "str":
                return str(raw)
            if self.type == "int":
                if isinstance(raw, bool):
                    raise ValueError(raw)
                return int(raw)
            if self.type == "float":
                return float(raw)
            if self.type == "bool":
                if isinstance(raw, bool):
                    return raw
                text = str(raw).strip().lower()
                if text in ("1", "true", "yes", "on"):
                    return True
                if text in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(raw)
            if self.type == "list":
                if isinstance(raw, str):
                    return [part.strip() for part in raw.split(",") if part.strip()]
                if isinstance(raw, (list, tuple)):
                    return [str(part) for part in raw]
                raise ValueError(raw)
            if self.type == "map":
                return _parse_map(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{origin}: {self.name} must be of type {self.type}, got {raw!r}"
            ) from None
        raise AssertionError(f"unknown setting type {self.type}")


def _parse_map(raw: Any) -> dict[str, float]:
    """A mapping of names to numbers: a YAML mapping, or ``key=value,key=value`` in the environment."""
    if isinstance(raw, str):
        pairs = []
        for part in raw.split(","):
            if part.strip():
                key, sep, value = part.partition("=")
                if not sep:
                    raise ValueError(raw)
                pairs.append((key, value))
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise ValueError(raw)
    out: dict[str, float] = {}
    for key, value in pairs:
        if isinstance(value, bool):
            raise ValueError(raw)
        number = float(value)
        if not number >= 0 or number == float("inf"):
            raise ValueError(raw)
        out[str(key).strip()] = int(number) if number.is_integer() else number
    return out


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "hotline")


SETTINGS: tuple[Setting, ...] = (
    Setting("general", "data_dir", _default_data_dir(), "str",
            "Directory for the SQLite database, generated lab secrets and runtime files."),
    Setting("general", "log_level", "INFO", "str", "Logging level: DEBUG, INFO, WARNING or ERROR."),
    Setting("api", "host", "127.0.0.1", "str", "Address the REST API listens on."),
    Setting("api", "port", 8080, "int", "Port the REST API listens on."),
    Setting("api", "rate_limit", 1200, "int",
            "Requests per minute allowed to one API key (a token bucket); 0 disables the limit."),
    Setting("api", "nice", 19, "int",
            "How much lower the API's CPU priority is than the call services' (a Unix nice increment, 0-19), "
            "taken by a process that serves the API without the call services (`hotline serve`'s API process, "
            "`--api-only`): a flood of API requests on the same machine then cannot hold back the calls; the API "
            "(and the Twilio webhooks it passes on) answers more slowly only while the calls need the CPU. 0: equal."),
    Setting("database", "url", "", "str",
            "Database URL: sqlite:///path or postgresql://user:pass@host/db. "
            "Empty means a SQLite file in the data directory. DATABASE_URL also sets it."),
    Setting("database", "pool_size", 8, "int", "Connections kept by the database pool."),
    Setting("ari", "url", "http://127.0.0.1:8088", "str", "Base URL of Asterisk's HTTP server (ARI)."),
    Setting("ari", "username", "hotline", "str", "ARI user."),
    Setting("ari", "password", "", "str",
            "ARI password. Empty: a random one generated for the local lab and kept in the data directory.",
            secret=True),
    Setting("ari", "app", "hotline", "str", "Name of the Stasis application."),
    Setting("ami", "host", "127.0.0.1", "str", "Asterisk Manager Interface host."),
    Setting("ami", "port", 5038, "int", "Asterisk Manager Interface port."),
    Setting("ami", "username", "hotline", "str", "AMI user."),
    Setting("ami", "secret", "", "str",
            "AMI secret. Empty: a random one generated for the local lab and kept in the data directory.",
            secret=True),
    Setting("agi", "host", "127.0.0.1", "str", "Address the FastAGI server listens on."),
    Setting("ami", "action_timeout", 5.0, "float",
            "Seconds Hotline waits for Asterisk to answer an AMI action before giving up on it."),
    Setting("ami", "ping_interval", 10.0, "float",
            "Seconds between keep-alive Pings on the AMI connection (one unanswered Ping reconnects)."),
    Setting("agi", "port", 4573, "int", "Port the FastAGI server listens on."),
    Setting("agi", "secret", "", "str",
            "Secret the dialplan passes as the first argument of every FastAGI request (the server "
            "refuses a request without it). Empty: a random one generated for the local lab and kept in "
            "the data directory.",
            secret=True),
    Setting("agi", "allowed_peers", ["127.0.0.1/32", "::1"], "list",
            "Addresses (IP or CIDR) allowed to connect to the FastAGI server (Asterisk's); anything else "
            "is closed before it is read. Comma separated in the environment."),
    Setting("sip", "default_region", "US", "str",
            "Region used to read national-format numbers (ISO 3166 code, e.g. US, GB, FR)."),
    Setting("sip", "outbound_trunk", "", "str",
            "PJSIP endpoint through which E.164 numbers are dialed; empty means only SIP URIs can be rung."),
    Setting("sip", "outbound_trunk_contact", "", "str",
            "Lab only: SIP URI the lab defines the outbound trunk towards (e.g. sip:127.0.0.1:5080, "
            "a test carrier); empty: define the outbound trunk yourself in pjsip.conf."),
    Setting("sip", "trunk_addresses", ["127.0.0.1"], "list",
            "Addresses (IP or CIDR) allowed to deliver inbound calls; comma separated in the environment."),
    Setting("sip", "allowed_hosts", ["127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
            "list",
            "Hosts a SIP URI may point at (IP addresses, CIDR networks or host names): numbers and calls to any "
            "other host are refused. Default: loopback and the private networks."),
    Setting("sip", "port", 5060, "int", "UDP port of the lab Asterisk's SIP transport."),
    Setting("sip", "bind", "127.0.0.1", "str", "Address of the lab Asterisk's SIP transport."),
    Setting("sip", "rtp_start", 20000, "int", "First RTP port of the lab Asterisk."),
    Setting("sip", "rtp_end", 20999, "int", "Last RTP port of the lab Asterisk."),
    Setting("sip", "fallback_number", "", "str",
            "Where the dialplan sends a caller when neither ARI nor FastAGI answers (empty: a spoken apology)."),
    Setting("tts", "engine", "espeak-ng", "str", "Speech synthesizer: espeak-ng or flite."),
    Setting("tts", "voice", "en-us", "str", "Voice passed to the synthesizer."),
    Setting("tts", "cache_dir", "", "str",
            "Directory of synthesized prompts, readable by Asterisk. "
            "Empty: var/lib/hotline/sounds inside the lab Asterisk's root."),
    Setting("tts", "asterisk_dir", "", "str",
            "The same directory as Asterisk sees it (for a chroot or a container). "
            "Empty: derived from tts.cache_dir."),
    Setting("asterisk", "root", "/var/cache/hotline/asterisk-root", "str",
            "Where `hotline asterisk up` builds and caches the lab's Debian root with Asterisk."),
    Setting("asterisk", "suite", "sid", "str", "Debian suite the lab root is built from (Asterisk 22 is in sid)."),
    Setting("asterisk", "mirror", "", "str", "Debian mirror for debootstrap; empty means debootstrap's default."),
    Setting("notify", "from_number", "", "str",
            "Caller ID (E.164) of notification calls when the request gives no fromNumber; empty: none."),
    Setting("notify", "provider", "asterisk", "str",
            "Who places notification calls: asterisk (the local Asterisk, through AMI and FastAGI) or twilio (the "
            "global Twilio account, twilio.*). A project with a project-level Twilio configuration always uses it."),
    Setting("notify", "ring_timeout", 30.0, "float", "Seconds a notification call rings before it is a Missed Call."),
    Setting("notify", "digit_timeout", 5.0, "float",
            "Seconds a notification call waits for a key after \"press 1 to acknowledge\"."),
    Setting("notify", "max_prompts", 3, "int",
            "How many times the acknowledgement prompt is said without an answer before hanging up."),
    Setting("notify", "rates", {}, "map",
            "Cost of notification calls: number prefix to USD cents per started minute, e.g. "
            "{\"1\": 1, \"44\": 2, \"sip:\": 0} (the longest prefix wins; no match costs 0). "
            "In the environment: 1=1,44=2."),
    Setting("notify", "webhook_url", "", "str",
            "URL that receives a POST for every acknowledged notification call; empty: none."),
    Setting("notify", "webhook_secret", "", "str",
            "Key of the webhook's HMAC-SHA256 signature (header X-Hotline-Signature: t=<time>,v1=<hex>).",
            secret=True),
    Setting("notify", "webhook_retries", 5, "int",
            "Further attempts (with exponential back-off) when the webhook does not answer 2xx."),
    Setting("notify", "max_calls_in_progress", 10, "int",
            "Notification calls one project may have being placed at once (POST /api/call-log/send answers "
            "429 beyond); 0: no cap."),
    Setting("notify", "max_calls_per_hour", 120, "int",
            "Notification calls one project may place per hour (429 beyond); 0: no cap."),
    Setting("notify", "verification_calls", True, "bool",
            "Deliver numbers' verification codes by a phone call that speaks them."),
    Setting("notify", "verification_codes_per_day", 5, "int",
            "Verification codes sent to one destination (a phone number or SIP URI of a project) in any 24 "
            "hours, whoever asks; more are refused (429) until the oldest is a day old. 0: no limit."),
    Setting("controller", "confirm_timeout", 10.0, "float",
            "Seconds an answered on-call leg has to press 1 before it counts as not answered."),
    Setting("controller", "ari", True, "bool",
            "Run the ARI call controller. false: only the dialplan services (AMI, the FastAGI routes, "
            "notification calls), for installations whose dialplan runs the policies over FastAGI."),
    Setting("controller", "host", "127.0.0.1", "str",
            "Address of the call services' own HTTP server (health, readiness, /metrics, "
            "/api/controller/stats) when `hotline serve` runs them in their own process beside the API."),
    Setting("controller", "port", 8081, "int", "Port of that server."),
    Setting("controller", "reconnect_max_delay", 10.0, "float",
            "Longest wait between two attempts to reach Asterisk's ARI."),
    Setting("controller", "ari_lost_after", 0.0, "float",
            "Seconds without ARI (Asterisk stopped, or unreachable) after which the calls the controller runs "
            "on that Asterisk are closed as lost (Failed), rather than left open until it comes back; 0: never "
            "(one Asterisk: when it comes back, its calls are resumed, and a conversation going on in it is kept). "
            "`hotline cluster up` gives its controllers 30 s unless set: a dead node never comes back."),
    Setting("contact_center", "agent_ring_timeout", 30.0, "float",
            "Seconds an agent's phone rings for a call of the calls API before the call fails "
            "(agent_no_answer)."),
    Setting("contact_center", "end_user_ring_timeout", 30.0, "float",
            "Seconds the end user's phone rings, once the agent answered, before the call fails "
            "(end_user_no_answer)."),
    Setting("contact_center", "choice_timeout", 10.0, "float",
            "Seconds an agent has to choose the outbound number on the keypad (calls created with 202)."),
    Setting("contact_center", "max_call_seconds", 7200.0, "float",
            "A connected contact-center call longer than this is ended (disconnected_by_system)."),
    Setting("contact_center", "menu_input_timeout", 5.0, "float",
            "Seconds an IVR menu waits for the caller's key after saying its options (then it says them again)."),
    Setting("contact_center", "offer_confirm_timeout", 10.0, "float",
            "Seconds an agent who answered a queue's offer has to press 1 to accept it, after hearing who calls."),
    Setting("contact_center", "queue_announce_every", 30.0, "float",
            "Seconds between the wait messages a queued caller hears (0: none)."),
    Setting("contact_center", "voicemail_max_silence", 10.0, "float",
            "A voicemail recording ends after this many seconds of silence."),
    Setting("contact_center", "scheduler_poll", 0.25, "float",
            "Seconds between two looks for the scheduled calls that are due (a call fires within about this "
            "long of its scheduled_at; every process running the call services looks, each call fires once)."),
    Setting("contact_center", "recordings_dir", "", "str",
            "Directory where Hotline keeps the recordings of contact-center calls (served by the calls API to "
            "the call's project only). Empty: <general.data_dir>/recordings."),
    Setting("twilio", "account_sid", "", "str",
            "The global Twilio account (AC...): its numbers' calls run the policies over TwiML webhooks, and "
            "policies without a project-level configuration (projectCallSMSConfig) use it. Empty: no global account."),
    Setting("twilio", "auth_token", "", "str",
            "The global Twilio account's auth token: it checks every webhook's X-Twilio-Signature and signs the "
            "REST requests.", secret=True),
    Setting("twilio", "from_number", "", "str",
            "The caller ID (E.164, a number of the global account) of notification calls made through Twilio."),
    Setting("twilio", "public_url", "", "str",
            "The public base URL Twilio reaches Hotline's webhooks at (https://hotline.example.com): every URL "
            "in the TwiML Hotline returns starts with it, and signatures are checked against it. Required to "
            "take Twilio calls."),
    Setting("twilio", "trust_forwarded_headers", False, "bool",
            "Build the URL a signature is checked against from X-Forwarded-Proto and X-Forwarded-Host (only "
            "behind a proxy that sets them; otherwise anyone could choose the URL)."),
    Setting("twilio", "voice", "Polly.Joanna", "str", "The voice of <Say> (Twilio's voice names)."),
    Setting("twilio", "language", "en-US", "str", "The language of <Say> and <Gather>."),
    Setting("twilio", "api_base_url", "https://api.twilio.com", "str",
            "Twilio's REST API. Change it only to point at a stand-in (tests)."),
    Setting("twilio", "encryption_key", "", "str",
            "The key (a Fernet key: `hotline twilio key` makes one) that encrypts the auth tokens of "
            "project-level Twilio configurations at rest. Required to store one.", secret=True),
)

_BY_NAME = {s.name: s for s in SETTINGS}

#: The secrets the local lab generates when they are not configured (``Config.with_lab_secrets``).
LAB_SECRETS = ("ari.password", "ami.secret", "agi.secret")


def setting_default(name: str) -> Any:
    return _BY_NAME[name].default


class Section:
    """Attribute access to one section: ``config.api.port``."""

    def __init__(self, name: str, values: dict[str, Any]):
        self._name = name
        self._values = values

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no setting {self._name}.{key}") from None

    def __repr__(self) -> str:
        return f"Section({self._name}, {self._values!r})"


class Config:
    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str] | None = None):
        self._values = dict(values)
        self.sources = dict(sources or {})
        sections: dict[str, dict[str, Any]] = {}
        for name, value in self._values.items():
            section, key = name.split(".", 1)
            sections.setdefault(section, {})[key] = value
        self._sections = {name: Section(name, vals) for name, vals in sections.items()}

    def __getattr__(self, section: str) -> Section:
        try:
            return self._sections[section]
        except KeyError:
            raise AttributeError(f"no configuration section {section!r}") from None

    def get(self, name: str) -> Any:
        return self._values[name]

    def replace(self, **changes: Any) -> "Config":
        """A copy with some settings changed: ``config.replace(api__port=9000)``."""
        values = dict(self._values)
        for dunder, value in changes.items():
            name = dunder.replace("__", ".", 1)
            if name not in _BY_NAME:
                raise ConfigError(f"unknown setting {name}")
            values[name] = value
        return Config(values, self.sources)

    def as_dict(self, reveal_secrets: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for setting in SETTINGS:
            value = self._values[setting.name]
            if setting.secret and value and not reveal_secrets:
                value = "********"
            out.setdefault(setting.section, {})[setting.key] = value
        return out

    # Derived values -----------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return Path(self.general.data_dir)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'hotline.db'}"

    @property
    def recordings_dir(self) -> Path:
        """Where the recordings of contact-center calls are kept (a path on this machine)."""
        return Path(self.contact_center.recordings_dir or self.data_dir / "recordings")

    @property
    def sounds_dir(self) -> Path:
        """Where synthesized prompts are written (a path on this machine)."""
        if self.tts.cache_dir:
            return Path(self.tts.cache_dir)
        return Path(self.asterisk.root) / "var/lib/hotline/sounds"

    @property
    def asterisk_sounds_dir(self) -> str:
        """The prompts' directory as Asterisk sees it (inside its root, for the lab)."""
        if self.tts.asterisk_dir:
            return self.tts.asterisk_dir
        sounds, root = self.sounds_dir, Path(self.asterisk.root)
        if sounds.is_relative_to(root):
            return "/" + str(sounds.relative_to(root))
        return str(sounds)

    def with_lab_secrets(self, create: bool = False) -> "Config":
        """Fill empty ARI/AMI/FastAGI secrets from ``<data_dir>/secrets.json``.

        No password has a default that works anywhere: the local lab gets random
        ones, generated once (``create=True``) and shared by the lab (its rendered
        configuration) and the controller through that file.
        """
        missing = [n for n in LAB_SECRETS if not self._values[n]]
        if not missing:
            return self
        path = self.data_dir / "secrets.json"
        stored: dict[str, str] = {}
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from None
        changed = False
        for name in missing:
            if not stored.get(name) and create:
                stored[name] = secrets.token_urlsafe(24)
                changed = True
        if changed:
            private_dir(path.parent)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(stored, fh, indent=2)
            os.replace(tmp, path)
        values = dict(self._values)
        for name in missing:
            if stored.get(name):
                values[name] = stored[name]
        return Config(values, self.sources)


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by its owner only (0700): it holds the database and the secrets."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def connect_host(host: str) -> str:
    """Where to connect to reach a server bound to ``host`` (a wildcard address means this machine)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("HOTLINE_CONFIG"):
        return Path(env["HOTLINE_CONFIG"])
    default = Path("hotline.yaml")
    return default if default.exists() else None


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the YAML file, then the environment."""
    env = os.environ if env is None else env
    values = {s.name: s.default for s in SETTINGS}
    sources = {s.name: "default" for s in SETTINGS}

    file_path = find_config_file(str(path) if path else None, env)
    if file_path is not None:
        try:
            text = file_path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {file_path}: {exc.strerror}") from None
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file_path}: not valid YAML: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{file_path}: the top level must be a mapping of sections")
        for section, entries in document.items():
            if not isinstance(entries, dict):
                raise ConfigError(f"{file_path}: section {section!r} must be a mapping")
            for key, raw in entries.items():
                name = f"{section}.{key}"
                setting = _BY_NAME.get(name)
                if setting is None:
                    raise ConfigError(f"{file_path}: unknown setting {name} (see `hotline config --help`)")
                values[name] = setting.parse(raw, str(file_path))
                sources[name] = str(file_path)

    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = setting.parse(env[setting.env], setting.env)
            sources[setting.name] = setting.env
    if env.get("DATABASE_URL") and "HOTLINE_DATABASE_URL" not in env:
        values["database.url"] = env["DATABASE_URL"]
        sources["database.url"] = "DATABASE_URL"

    for name in ("api.port", "controller.port", "ami.port", "agi.port", "sip.port", "sip.rtp_start", "sip.rtp_end"):
        if not 0 < values[name] < 65536:
            raise ConfigError(f"{name} must be a port between 1 and 65535, got {values[name]}")
    if not 0 <= values["api.nice"] <= 19:
        raise ConfigError(f"api.nice must be between 0 and 19, got {values['api.nice']}")
    if values["sip.rtp_start"] > values["sip.rtp_end"]:
        raise ConfigError("sip.rtp_start must not be above sip.rtp_end")
    if values["tts.engine"] not in ("espeak-ng", "flite"):
        raise ConfigError(f"tts.engine must be espeak-ng or flite, got {values['tts.engine']!r}")
    if values["notify.provider"] not in ("asterisk", "twilio"):
        raise ConfigError(f"notify.provider must be asterisk or twilio, got {values['notify.provider']!r}")
    public = values["twilio.public_url"]
    if public and not (public.startswith("https://") or public.startswith("http://")):
        raise ConfigError(f"twilio.public_url must be an http(s) URL such as https://hotline.example.com, got {public!r}")
    return Config(values, sources)


def settings_markdown() -> str:
    """The settings table as Markdown, for docs/configuration.md (checked by a test)."""
    lines = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = s.default
        if s.name == "general.data_dir":
            default = "~/.local/share/hotline"
        if isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, dict):
            default = ",".join(f"{k}={v}" for k, v in default.items())
        lines.append(f"| `{s.name}` | `{s.env}` | `{default}` | {s.help} |")
    return "\n".join(lines) + "\n"
