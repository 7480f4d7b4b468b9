"""docker-compose.yml, checked without Docker: docker-compose's own parser (`config`), the
Dockerfiles its services build, and the provisioning commands its entrypoints run, run here.

Needs Debian's docker-compose package (scripts/install-system-deps), not a Docker daemon.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

from ivr.config import SETTINGS, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: The variables compose refuses to go without (`${VAR:?...}`), with the dummy values of the tests.
REQUIRED = {
    "HOTLINE_ARI_PASSWORD": "dummy-ari-password",
    "HOTLINE_AMI_SECRET": "dummy-ami-secret",
    "HOTLINE_AGI_SECRET": "dummy-agi-secret-0123456789",
    "POSTGRES_PASSWORD": "dummy-postgres-password",
    "HOTLINE_SIP_TRUNK_ADDRESSES": "203.0.113.10,198.51.100.0/24",
}
SECRETS = ("HOTLINE_ARI_PASSWORD", "HOTLINE_AMI_SECRET", "HOTLINE_AGI_SECRET", "POSTGRES_PASSWORD")

#: What the official images this file uses (not built here) are documented to ship.
OFFICIAL_IMAGES = {
    "postgres": {"pg_isready", "psql", "postgres", "docker-entrypoint.sh"},
}
#: What every Debian-based image has (coreutils, dash).
DEBIAN_BASE = {"sh", "chgrp", "chmod", "rm", "mkdir", "install"}
#: Binaries of Debian packages that the images' commands use, and the package shipping each.
DEBIAN_BINARIES = {"/usr/sbin/asterisk": "asterisk", "asterisk": "asterisk", "espeak-ng": "espeak-ng",
                   "sox": "sox", "python3": "python3"}


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: run scripts/install-system-deps (Debian's docker-compose "
                    "package; its `config` parses docker-compose.yml, no Docker daemon needed)")
    return exe


def compose_config(tmp_path: Path, values: dict[str, str]) -> subprocess.CompletedProcess:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    # A clean environment: variables of the machine running the tests must not fill a gap.
    return subprocess.run([docker_compose(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
                           "--env-file", str(env_file), "config"],
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    result = compose_config(tmp_path_factory.mktemp("compose"), REQUIRED)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


# ------------------------------------------------------------------------------ Dockerfiles

class Dockerfile:
    """The instructions of a Dockerfile (continuation lines joined), and what its image holds."""

    def __init__(self, path: Path):
        self.path = path
        text = re.sub(r"\\\n", " ", path.read_text())
        self.instructions: list[tuple[str, str]] = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                word, _, rest = line.partition(" ")
                self.instructions.append((word.upper(), rest.strip()))

    def all(self, instruction: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == instruction]

    @property
    def base(self) -> str:
        return self.all("FROM")[-1].split()[0]

    def copies(self) -> dict[str, str]:
        """{destination: source} of every COPY (sources relative to the build context)."""
        found = {}
        for rest in self.all("COPY"):
            *sources, dest = rest.split()
            for source in sources:
                found[dest.rstrip("/") if len(sources) == 1 else f"{dest.rstrip('/')}/{Path(source).name}"] = source
        return found

    def run_words(self) -> list[list[str]]:
        """Each RUN's commands (split on &&), as words."""
        return [shlex.split(command) for rest in self.all("RUN") for command in rest.split("&&")]

    def apt_packages(self) -> set[str]:
        return {w for words in self.run_words() if words[:1] == ["apt-get"] or "apt-get" in words[:3]
                if "install" in words for w in words[words.index("install") + 1:] if not w.startswith("-")}

    def pip_installs(self) -> list[tuple[str, list[str]]]:
        """(the pip that installs, [what it installs]) for every pip install."""
        found = []
        for words in self.run_words():
            pips = [w for w in words if w == "pip" or w.endswith("/pip")]
            if pips and "install" in words:
                args, skip = [], False
                for word in words[words.index("install") + 1:]:
                    if skip:
                        skip = False
                    elif word in ("-c", "--constraint", "-r"):
                        skip = True
                    elif not word.startswith("-"):
                        args.append(word)
                found.append((pips[0], args))
        return found

    def venvs(self) -> set[str]:
        return {words[words.index("venv") + 1] for words in self.run_words() if "venv" in words and "-m" in words}


def provided(dockerfile: Dockerfile, binary: str) -> str | None:
    """How ``binary`` comes into the image, or None."""
    base = dockerfile.base.split(":")[0]
    if binary in dockerfile.copies():
        source = ROOT / dockerfile.copies()[binary]
        assert source.is_file(), f"{dockerfile.path}: COPY of a missing file {source}"
        return f"COPY {source.relative_to(ROOT)}"
    if binary in DEBIAN_BASE and base in ("debian", "python"):
        return f"the Debian base image {dockerfile.base}"
    if base == "python" and binary in ("python", "python3", "pip"):
        return f"the base image {dockerfile.base}"
    if binary in DEBIAN_BINARIES and DEBIAN_BINARIES[binary] in dockerfile.apt_packages():
        return f"apt-get install {DEBIAN_BINARIES[binary]}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for pip, args in dockerfile.pip_installs():
        installs_hotline = (any(a.split("[")[0] == "/src" for a in args)
                            and dockerfile.copies().get("/src/ivr") == "ivr")
        if not installs_hotline:
            continue
        if binary in scripts and pip == "pip":
            return f"pip install of the hotline package (its script {binary})"
        venv = pip.rsplit("/bin/pip", 1)[0]
        if binary == f"{venv}/bin/python" and venv in dockerfile.venvs():
            return f"the venv {venv} holding the hotline package"
    return None


def shell_commands(script: Path) -> list[list[str]]:
    """The commands a simple entrypoint script runs (continuations joined, `exec` dropped)."""
    text = re.sub(r"\\\n", " ", script.read_text())
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("set "):
            continue
        words = shlex.split(line)
        commands.append(words[1:] if words[0] == "exec" else words)
    return commands


def image_of(service: str, config: dict) -> Dockerfile | None:
    build = config["services"][service].get("build")
    return Dockerfile(Path(build["context"]) / build["dockerfile"]) if build else None


# ----------------------------------------------------------------------------------- tests

def test_every_service_is_there_with_a_healthcheck(config):
    assert set(config["services"]) == {"asterisk", "hotline", "postgres"}
    for name, service in config["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert service.get("restart") == "unless-stopped", name
    assert config["services"]["hotline"]["depends_on"] == {"asterisk": {"condition": "service_healthy"},
                                                            "postgres": {"condition": "service_healthy"}}
    hc = config["services"]["postgres"]["healthcheck"]["test"]
    assert hc[1] == "pg_isready" and "--username=hotline" in hc


def test_volumes_keep_the_database_prompts_and_recordings(config):
    named = set(config["volumes"])

    def mounts(service: str) -> dict[str, str]:
        found = {}
        for volume in config["services"][service]["volumes"]:
            source, target, *_ = volume.split(":")
            assert source in named, f"{service}: {source} is not a named volume"
            found[target] = source
        return found

    env = config["services"]["hotline"]["environment"]
    hotline, asterisk = mounts("hotline"), mounts("asterisk")
    assert mounts("postgres") == {"/var/lib/postgresql/data": "postgres-data"}
    assert hotline[env["HOTLINE_GENERAL_DATA_DIR"]] == "hotline-data"
    assert hotline[env["HOTLINE_CONTACT_CENTER_RECORDINGS_DIR"]] == "recordings"
    # The prompts Hotline synthesizes are where Asterisk reads them, read-only for Asterisk.
    assert hotline[env["HOTLINE_TTS_CACHE_DIR"]] == asterisk[env["HOTLINE_TTS_ASTERISK_DIR"]] == "prompts"
    assert f"prompts:{env['HOTLINE_TTS_ASTERISK_DIR']}:ro" in config["services"]["asterisk"]["volumes"]
    # Recordings not yet fetched from Asterisk survive a new container.
    assert asterisk["/var/spool/asterisk"] == "asterisk-spool"


def test_networking_keeps_ari_ami_and_fastagi_on_loopback(config):
    services = config["services"]
    # SIP and RTP reach Asterisk without NAT; Hotline shares its loopback (ARI, AMI, FastAGI).
    assert services["asterisk"]["network_mode"] == services["hotline"]["network_mode"] == "host"
    assert services["postgres"]["ports"] == ["127.0.0.1:5432:5432/tcp"]
    assert "@127.0.0.1:5432/hotline" in services["hotline"]["environment"]["DATABASE_URL"]
    for name in ("asterisk", "hotline"):
        loaded = load_config(env=services[name]["environment"])
        assert loaded.ari.url == "http://127.0.0.1:8088" and loaded.ami.host == loaded.agi.host == "127.0.0.1"
        assert loaded.sip.trunk_addresses == ["203.0.113.10", "198.51.100.0/24"]


def test_secrets_come_from_the_env_file_only(config):
    services = config["services"]
    for service in ("asterisk", "hotline"):
        env = services[service]["environment"]
        for name in ("HOTLINE_ARI_PASSWORD", "HOTLINE_AMI_SECRET", "HOTLINE_AGI_SECRET"):
            assert env[name] == REQUIRED[name], (service, name)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == REQUIRED["POSTGRES_PASSWORD"]
    assert f":{REQUIRED['POSTGRES_PASSWORD']}@" in services["hotline"]["environment"]["DATABASE_URL"]
    # Each secret is only ever `${NAME:?message}` in the file: never a default, never a literal.
    raw = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", raw)
        assert uses and all(use.startswith(":?") for use in uses), (name, uses)
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    # Every HOTLINE_* variable given to a container is a setting Hotline knows (no typo is silently ignored).
    known = {s.env for s in SETTINGS}
    for service in ("asterisk", "hotline"):
        unknown = {v for v in services[service]["environment"] if v.startswith("HOTLINE_")} - known
        assert not unknown, (service, unknown)


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_config_fails_loudly_without_each_required_value(tmp_path, missing):
    values = {name: value for name, value in REQUIRED.items() if name != missing}
    result = compose_config(tmp_path, values)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr
    # An empty value (the example file's) fails the same way.
    result = compose_config(tmp_path, dict(values, **{missing: ""}))
    assert result.returncode != 0 and f"set {missing} in .env" in result.stderr


def test_the_example_env_file_names_every_required_value_and_fails_unchanged(tmp_path):
    example = (ROOT / ".env.example").read_text()
    for name in REQUIRED:
        assert re.search(rf"^{name}=$", example, re.M), name
    env_file = tmp_path / "copied.env"
    shutil.copy(ROOT / ".env.example", env_file)
    result = subprocess.run([docker_compose(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
                             "--env-file", str(env_file), "config"], env={"PATH": os.environ.get("PATH", "")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "in .env" in result.stderr


def test_entrypoints_and_healthchecks_run_what_their_images_install(config):
    services = config["services"]
    for name in ("asterisk", "hotline"):
        dockerfile = image_of(name, config)
        assert dockerfile is not None, f"{name} is built here"
        entrypoint = services[name]["entrypoint"]
        assert [json.loads(e) for e in dockerfile.all("ENTRYPOINT")] == [entrypoint]
        assert provided(dockerfile, entrypoint[0]), f"{name}: {entrypoint[0]} is not in its image"
        script = ROOT / dockerfile.copies()[entrypoint[0]]
        assert any(f"chmod 0755 {entrypoint[0]}" in " ".join(words) for words in dockerfile.run_words()) \
            or os.access(script, os.X_OK)
        for command in shell_commands(script):
            assert provided(dockerfile, command[0]), f"{name}: {script.name} runs {command[0]}, not in its image"
        test = services[name]["healthcheck"]["test"]
        assert provided(dockerfile, test[1]), f"{name}: the healthcheck's {test[1]} is not in its image"
        for arg in test[2:]:
            if arg.startswith("/"):
                assert provided(dockerfile, arg), f"{name}: the healthcheck's {arg} is not in its image"
    image = services["postgres"]["image"].split(":")[0]
    assert services["postgres"].get("build") is None and image in OFFICIAL_IMAGES
    assert services["postgres"]["healthcheck"]["test"][1] in OFFICIAL_IMAGES[image]


def test_the_hotline_entrypoint_migrates_then_serves(config):
    dockerfile = image_of("hotline", config)
    commands = shell_commands(ROOT / dockerfile.copies()[config["services"]["hotline"]["entrypoint"][0]])
    assert commands == [["hotline", "migrate"], ["hotline", "serve", "$@"]]
    for command in commands:  # both are commands of the `hotline` the image installs
        result = subprocess.run([sys.executable, "-m", "ivr.main", command[1], "--help"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert dockerfile.base.startswith("python:3.11")
    assert any("/src[postgres]" in args for _pip, args in dockerfile.pip_installs()), \
        "the hotline image installs asyncpg (PostgreSQL)"
    assert any("-c /src/constraints.txt" in rest for rest in dockerfile.all("RUN"))


def test_the_asterisk_entrypoint_renders_this_configuration(config, tmp_path):
    """The entrypoint's render command, run here with the environment compose gives the container
    (only the image's paths swapped for temporary ones)."""
    service = config["services"]["asterisk"]
    dockerfile = image_of("asterisk", config)
    script = ROOT / dockerfile.copies()[service["entrypoint"][0]]
    render = [c for c in shell_commands(script) if "render" in c]
    assert len(render) == 1 and render[0][:4] == ["/opt/hotline/bin/python", "-m", "ivr.cli.asterisk", "render"]
    command = render[0]
    out, package = tmp_path / "etc-asterisk", tmp_path / "package-etc"
    package.mkdir()
    (package / "indications.conf").write_text("[general]\ncountry = us\n")
    # The package's configuration is moved to where the entrypoint takes it from.
    package_in_image = command[command.index("--package-conf") + 1]
    assert any(words[:1] == ["mv"] and words[1:3] == ["/etc/asterisk", package_in_image]
               for words in dockerfile.run_words())
    command = [sys.executable, *command[1:]]
    command[command.index("/etc/asterisk")] = str(out)
    command[command.index(package_in_image)] = str(package)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **service["environment"]}
    command = [re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), word)
               for word in command]
    result = subprocess.run([*command, "--moddir", "/usr/lib/x86_64-linux-gnu/asterisk/modules"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "systemname = hotline" in (out / "asterisk.conf").read_text()
    assert "secret = dummy-ami-secret" in (out / "manager.conf").read_text()
    assert "password = dummy-ari-password" in (out / "ari.conf").read_text()
    assert "dummy-agi-secret-0123456789" in (out / "extensions.conf").read_text()
    pjsip = (out / "pjsip.conf").read_text()
    assert "bind = 0.0.0.0:5060" in pjsip
    assert "match = 203.0.113.10/32" in pjsip and "match = 198.51.100.0/24" in pjsip
    assert "rtpstart = 20000" in (out / "rtp.conf").read_text()
    assert (out / "indications.conf").is_file()
    assert not (tmp_path / "secrets.json").exists() and not list(tmp_path.rglob("secrets.json"))
    # Without its secrets the container does not start (never generates its own).
    env.pop("HOTLINE_AMI_SECRET")
    result = subprocess.run([*command, "--moddir", "/x"], env=env, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 2 and "HOTLINE_AMI_SECRET" in result.stderr


def test_the_asterisk_image_installs_every_package_its_renderer_imports(tmp_path):
    """The Asterisk image installs the hotline package without its dependencies, plus a few: exactly
    those `python -m ivr.cli.asterisk` (render and ping) imports."""
    dockerfile = Dockerfile(ROOT / "docker/asterisk/Dockerfile")
    (pip, args), = dockerfile.pip_installs()
    assert any("--no-deps" in rest for rest in dockerfile.all("RUN"))
    installed = {importlib.metadata.distribution(a).name.lower() for a in args if not a.startswith("/")}
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOTLINE_GENERAL_DATA_DIR": str(tmp_path),
           **{name: REQUIRED[name] for name in ("HOTLINE_ARI_PASSWORD", "HOTLINE_AMI_SECRET", "HOTLINE_AGI_SECRET")},
           "HOTLINE_ARI_URL": "http://127.0.0.1:9", "HOTLINE_AMI_PORT": "9"}
    probe = ("import runpy, sys\n"
             "sys.argv = ['ivr.cli.asterisk', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('ivr.cli.asterisk', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(' '.join(sorted({n.split('.')[0] for n, m in list(sys.modules.items())\n"
             "                       if getattr(m, '__file__', None)})), file=sys.stderr)\n")
    needed: set[str] = set()
    for argv in (["render", str(tmp_path / "out"), "--require-secrets"], ["ping", "--timeout", "0.2"]):
        result = subprocess.run([sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
        imported = set(result.stderr.strip().splitlines()[-1].split())
        third_party = {m for m in imported if m not in sys.stdlib_module_names and not m.startswith("_")
                       and m not in ("ivr", "sitecustomize", "usercustomize")}
        distributions = importlib.metadata.packages_distributions()
        needed |= {distributions[m][0].lower() for m in third_party}
    assert (tmp_path / "out" / "pjsip.conf").is_file()
    assert needed == installed, f"the Asterisk image installs {sorted(installed)}; its renderer imports {sorted(needed)}"


def test_the_hotline_healthcheck_needs_both_processes_ready(tmp_path):
    script = ROOT / "docker/hotline/healthcheck.py"

    class Ready(http.server.BaseHTTPRequestHandler):
        status = 200

        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(self.status if self.path == "/api/ready" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    class NotReady(Ready):
        status = 503

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for handler in (Ready, Ready, NotReady)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    api, controller, failing = (s.server_address[1] for s in servers)
    try:
        def check(api_port, controller_port, host="0.0.0.0"):
            env = {"PATH": os.environ["PATH"], "HOTLINE_API_HOST": host, "HOTLINE_API_PORT": str(api_port),
                   "HOTLINE_CONTROLLER_PORT": str(controller_port)}
            return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)

        assert check(api, controller).returncode == 0
        assert check(api, failing).returncode != 0
        assert check(failing, controller).returncode != 0
        assert check(api, controller, host="127.0.0.1").returncode == 0
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_deployment_guide_names_what_the_file_has(config):
    guide = (ROOT / "docs/deployment.md").read_text()
    assert "docs/deployment.md" in (ROOT / "README.md").read_text().split("## Running it for real", 1)[1]
    for name in [*REQUIRED, *config["services"], *config["volumes"]]:
        assert f"`{name}`" in guide or name in guide, name
    assert "## Several nodes" in guide
