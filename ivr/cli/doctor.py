"""``hotline doctor``: checks what Hotline needs and says what to fix.

The database (reachable, migrated), ARI (answers, accepts the credentials, and whether a call
controller is connected), AMI (accepts the login; the dialplan contexts Hotline's FastAGI routes
and notification calls need are loaded, point at ``agi.host``/``agi.port`` and pass ``agi.secret``),
FastAGI (Hotline's server answers a probe carrying ``agi.secret``), TTS (the synthesizer and sox
run, the prompt is 8 kHz mono and readable by Asterisk) and SIP (the transport answers an OPTIONS;
the outbound trunk's endpoint exists); with a global Twilio account, its public URL, credentials
and numbers' webhooks.

Each check is ``ok``, ``warn`` (works, with a limitation) or ``FAIL`` (with the fix); the command
exits 1 when one fails. Every network check is bounded in time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import wave
from dataclasses import asdict, dataclass
from pathlib import Path


from ivr import health
from ivr.config import Config, connect_host
from ivr.twilio.rest import TwilioError, TwilioRest

OK, WARN, FAIL = "ok", "warn", "FAIL"
TIMEOUT = 3.0


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


async def check_database(config: Config) -> Check:
    from ivr.store.db import open_database, pending_migrations
    from ivr.store.models import Project

    url = config.database_url
    shown = url.split("@")[-1] if "@" in url else url
    try:
        db = open_database(url, pool_size=1, bind_models=False)
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver
        return Check("database", FAIL, f"{shown}: {exc}", "set database.url (DATABASE_URL)")
    try:
        pending = await asyncio.wait_for(pending_migrations(db), TIMEOUT * 2)
        if pending:
            return Check("database", FAIL, f"{shown}: {len(pending)} migration(s) pending ({', '.join(pending)})",
                         "run `hotline migrate`")
        await asyncio.wait_for(db.run(lambda: list(Project.select(Project.id).limit(1).bind(db))), TIMEOUT)
        return Check("database", OK, f"{shown} (reachable, migrated)")
    except Exception as exc:  # noqa: BLE001
        return Check("database", FAIL, f"{shown}: {exc or type(exc).__name__}",
                     "check that the database server runs and database.url (DATABASE_URL) is right")
    finally:
        await db.close_pool()


async def _ari_get(config: Config, path: str) -> tuple[int, dict | list | None]:
    probe = await asyncio.to_thread(health.ari_get, config.ari.url, config.ari.username, config.ari.password, path,
                                    TIMEOUT)
    if probe.status is None:
        raise OSError(probe.detail)
    return probe.status, probe.data


async def check_ari(config: Config) -> list[Check]:
    fix_reach = "start Asterisk (`hotline asterisk up` for the local lab) or set ari.url (HOTLINE_ARI_URL)"
    try:
        status, info = await _ari_get(config, "/asterisk/info")
    except OSError as exc:
        return [Check("ari", FAIL, f"{config.ari.url}: {exc}", fix_reach)]
    if status == 401:
        return [Check("ari", FAIL, f"{config.ari.url}: refuses user {config.ari.username!r}",
                      "make ari.username/ari.password (HOTLINE_ARI_PASSWORD) match ari.conf")]
    if status != 200:
        return [Check("ari", FAIL, f"{config.ari.url}: HTTP {status}", fix_reach)]
    version = ((info or {}).get("system") or {}).get("version", "?")
    checks = [Check("ari", OK, f"{config.ari.url}: Asterisk {version}")]
    status, _ = await _ari_get(config, f"/applications/{config.ari.app}")
    if status == 200:
        checks.append(Check("controller", OK, f"a call controller is connected (Stasis application {config.ari.app!r})"))
    else:
        checks.append(Check("controller", WARN, f"no call controller is connected (Stasis application "
                                                f"{config.ari.app!r}): calls fall back to FastAGI",
                            "run `hotline serve`"))
    if config.sip.outbound_trunk:
        trunk = config.sip.outbound_trunk
        status, endpoint = await _ari_get(config, f"/endpoints/PJSIP/{trunk}")
        if status == 404:
            checks.append(Check("sip trunk", FAIL, f"the outbound trunk endpoint {trunk!r} is not defined: "
                                                   "phone numbers cannot be rung",
                                f"define [{trunk}] in pjsip.conf from the hotline-outbound-trunk template"))
        elif status == 200:
            state = (endpoint or {}).get("state", "unknown")
            checks.append(Check("sip trunk", OK if state != "offline" else WARN,
                                f"outbound trunk {trunk!r} is defined (state {state})",
                                "" if state != "offline" else f"check the carrier's address in [{trunk}]'s AOR"))
    else:
        checks.append(Check("sip trunk", WARN, "no outbound trunk: only SIP URIs can be rung",
                            "set sip.outbound_trunk to ring phone numbers"))
    return checks


async def check_ami(config: Config) -> list[Check]:
    from ivr.asterisk.ami import AmiClient, AmiError

    host = connect_host(config.ami.host)
    login = await asyncio.to_thread(health.ami_login, host, int(config.ami.port), config.ami.username,
                                    config.ami.secret, TIMEOUT)
    if not login.ok:
        fix = ("make ami.username/ami.secret (HOTLINE_AMI_SECRET) match manager.conf" if "credentials" in login.detail
               else "start Asterisk, or set ami.host/ami.port (manager.conf must enable AMI there)")
        return [Check("ami", FAIL, f"{host}:{config.ami.port}: {login.detail}", fix)]
    quiet = logging.getLogger("ivr.asterisk.ami")   # the outcome is reported below, not as log lines
    level, quiet.level = quiet.level, logging.CRITICAL
    client = AmiClient(host, config.ami.port, config.ami.username, config.ami.secret, action_timeout=TIMEOUT,
                       connect_timeout=TIMEOUT, reconnect_max_delay=1.0, events="off")
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not client.connected.is_set() and client.last_error is None:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        if not client.connected.is_set():
            return [Check("ami", FAIL, f"{client.address}: {client.last_error or 'no answer'}",
                          "start Asterisk, or set ami.host/ami.port (manager.conf must enable AMI there)")]
        status = await client.send({"Action": "CoreStatus"})
        checks = [Check("ami", OK, f"{client.address}: logged in as {config.ami.username} "
                                   f"({status.get('CoreCurrentCalls', '?')} call(s) now)")]
        expected = f"agi://{connect_host(config.agi.host)}:{config.agi.port}/"
        for context, route, what in (("hotline-fallback", "incoming-call-policy", "the FastAGI fallback"),
                                     ("hotline-agi-confirm", "leg-answered", "FastAGI escalation legs"),
                                     ("hotline-notify", "notification", "notification calls")):
            try:
                steps = await client.send_list({"Action": "ShowDialPlan", "Context": context}, "ShowDialPlanComplete")
            except AmiError:
                checks.append(Check("dialplan", FAIL, f"the context [{context}] is not loaded: {what} cannot work",
                                    "render Hotline's extensions.conf into Asterisk (`hotline asterisk render DIR`, "
                                    "or `hotline asterisk up` for the lab) and `dialplan reload`"))
                continue
            agi = [s.appdata for s in steps if s.application == "AGI" and f"/{route}" in (s.appdata or "")]
            if agi and not any(data.startswith(expected) for data in agi):
                checks.append(Check("dialplan", FAIL, f"[{context}] sends FastAGI to {agi[0].split(',')[0]!r}, not "
                                                      f"{expected}{route} (agi.host/agi.port)",
                                    "render the configuration again with these settings and `dialplan reload`"))
        secret_problem = await _dialplan_secret_problem(client, config.agi.secret)
        if secret_problem:
            checks.append(Check("dialplan", FAIL, secret_problem + ": the FastAGI server refuses its requests",
                                "render the configuration again with the agi.secret `hotline serve` runs with "
                                "(`hotline asterisk render DIR`, or `hotline asterisk up`) and `dialplan reload`"))
        if not any(c.name == "dialplan" for c in checks):
            checks.append(Check("dialplan", OK, f"Hotline's contexts are loaded and point at {expected}"))
        return checks
    except AmiError as exc:
        return [Check("ami", FAIL, f"{client.address}: {exc}", "check manager.conf's permissions for Hotline's user")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        quiet.level = level


async def _dialplan_secret_problem(client, secret: str) -> str:
    """What is wrong with the FastAGI secret the loaded dialplan passes (the global HOTLINE_AGI_SECRET
    of Hotline's extensions.conf), or "" when it is agi.secret. A dialplan rendered before agi.secret
    existed, or with another one, is the likely cause of refused FastAGI requests after an upgrade."""
    from ivr.asterisk.ami import AmiError

    try:
        value = (await client.send({"Action": "Getvar", "Variable": "HOTLINE_AGI_SECRET"})).get("Value") or ""
    except AmiError as exc:
        return f"cannot read the dialplan's FastAGI secret (Getvar HOTLINE_AGI_SECRET: {exc})"
    if not value:
        return "the dialplan passes no FastAGI secret (no global HOTLINE_AGI_SECRET: rendered before agi.secret)"
    if not secret or not hmac.compare_digest(value.encode(), secret.encode()):
        return "the dialplan's FastAGI secret (HOTLINE_AGI_SECRET) is not agi.secret"
    return ""


async def check_agi(config: Config) -> Check:
    if not config.agi.secret:
        return Check("fastagi", FAIL, "no FastAGI secret (agi.secret): the FastAGI server refuses every request "
                                      "without it, and `hotline serve` does not start it",
                     "set agi.secret (HOTLINE_AGI_SECRET) and render the dialplan with it, or run "
                     "`hotline asterisk up` for the lab")
    probe = await asyncio.to_thread(health.fastagi_hello, connect_host(config.agi.host), int(config.agi.port),
                                    config.agi.secret, TIMEOUT)
    if probe.ok:
        return Check("fastagi", OK, probe.detail)
    if "nothing listens" in probe.detail:
        return Check("fastagi", FAIL, probe.detail + "; the dialplan's FastAGI fallback and notification calls need it",
                     "run `hotline serve`")
    if probe.extra.get("refused"):
        return Check("fastagi", FAIL, probe.detail,
                     "give `hotline doctor` the agi.secret `hotline serve` runs with, and run it from an address "
                     "of agi.allowed_peers")
    return Check("fastagi", FAIL, probe.detail, "free the port or set agi.port")


async def check_tts(config: Config) -> Check:
    from ivr.tts import TTSError, synthesizer_from_config

    tts = synthesizer_from_config(config)
    try:
        tts.check()
        media = await asyncio.wait_for(tts.media("This is Hotline's speech check."), 30)
    except (TTSError, asyncio.TimeoutError) as exc:
        return Check("tts", FAIL, f"{config.tts.engine}: {exc or 'too slow'}",
                     "install the synthesizer and sox (`apt-get install espeak-ng sox`) or set tts.engine")
    path = Path(config.sounds_dir) / (media.rsplit("/", 1)[1] + ".wav")
    try:
        with wave.open(str(path)) as wav:
            shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
    except (OSError, wave.Error) as exc:
        return Check("tts", FAIL, f"{path}: not a readable WAV ({exc})", "check tts.cache_dir")
    if shape != (8000, 1, 2):
        return Check("tts", FAIL, f"{path}: {shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]} bits",
                     "prompts must be 8 kHz 16-bit mono: check that sox works")
    readable = os.stat(path).st_mode & 0o004 and os.stat(path.parent).st_mode & 0o001
    if not readable:
        return Check("tts", WARN, f"{path} may not be readable by Asterisk's user",
                     f"make {path.parent} world-readable (mode 755)")
    return Check("tts", OK, f"{config.tts.engine} ({config.tts.voice}) -> {path.parent}, which Asterisk reads as "
                            f"{config.asterisk_sounds_dir}")


async def check_sip(config: Config) -> Check:
    host, port = connect_host(config.sip.bind), int(config.sip.port)
    probe = await asyncio.to_thread(health.sip_options, host, port)
    answer = probe.data
    if not probe.ok:
        return Check("sip", FAIL, f"udp {host}:{port}: no answer to an OPTIONS",
                     "check that Asterisk runs with Hotline's pjsip.conf (sip.bind/sip.port)")
    if not config.sip.trunk_addresses:
        return Check("sip", FAIL, f"udp {host}:{port} answers ({answer}), but sip.trunk_addresses is empty: no "
                                  "inbound call is accepted", "list the carrier's addresses in sip.trunk_addresses")
    return Check("sip", OK, f"udp {host}:{port} answers ({answer}); inbound calls accepted from "
                            f"{', '.join(config.sip.trunk_addresses)}")


async def check_twilio(config: Config) -> list[Check]:
    """With a global Twilio account: its webhooks' public URL, its credentials (Twilio lists its numbers)
    and whether those numbers' voice webhooks point at Hotline. Nothing when Twilio is not used."""
    tw = config.twilio
    if not (tw.account_sid or tw.public_url):
        return []
    expected = f"{tw.public_url.rstrip('/')}/twilio/voice"
    checks = []
    if not tw.public_url:
        checks.append(Check("twilio", FAIL, "twilio.public_url is not set: every webhook is refused (503)",
                            "set twilio.public_url to the https address Twilio reaches Hotline at"))
    elif not tw.public_url.startswith("https://"):
        checks.append(Check("twilio", WARN, f"twilio.public_url {tw.public_url} is not https: the webhooks, "
                                            "and the calls' details they carry, cross the internet unencrypted",
                            "put Hotline behind a proxy with a certificate"))
    if not (tw.account_sid and tw.auth_token):
        if tw.account_sid:
            checks.append(Check("twilio", FAIL, f"{tw.account_sid}: no auth token",
                                "set twilio.auth_token (HOTLINE_TWILIO_AUTH_TOKEN)"))
        return checks
    try:
        async with TwilioRest(tw.account_sid, tw.auth_token, base_url=tw.api_base_url, timeout=TIMEOUT * 2) as rest:
            numbers = await rest.list_numbers()
    except TwilioError as exc:
        fix = ("check twilio.account_sid and twilio.auth_token (Console > Account info)" if exc.status == 401
               else "check that Twilio's REST API is reachable (twilio.api_base_url)")
        return [*checks, Check("twilio", FAIL, f"{tw.account_sid}: {exc.describe()}", fix)]
    elsewhere = [n.phone_number for n in numbers if n.voice_url != expected]
    if elsewhere and tw.public_url:
        checks.append(Check("twilio", WARN, f"{tw.account_sid}: {len(numbers)} number(s); the calls of "
                                            f"{', '.join(elsewhere[:5])}{' ...' if len(elsewhere) > 5 else ''} "
                                            f"do not go to {expected}",
                            "point them at it (Console, or POST /api/incoming-call-policy/:id/phone-number/assign)"))
    else:
        checks.append(Check("twilio", OK, f"{tw.account_sid}: credentials accepted, {len(numbers)} number(s)"
                                          + (f", all sent to {expected}" if numbers and tw.public_url else "")))
    return checks


async def run_checks(config: Config) -> list[Check]:
    config = config.with_lab_secrets()
    results = await asyncio.gather(check_database(config), check_ari(config), check_ami(config), check_agi(config),
                                   check_tts(config), check_sip(config), check_twilio(config))
    checks: list[Check] = []
    for result in results:
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def cmd_doctor(config: Config, args) -> int:
    checks = asyncio.run(run_checks(config))
    failing = [c for c in checks if c.status == FAIL]
    if args.json:
        print(json.dumps({"ok": not failing, "checks": [asdict(c) for c in checks]}, indent=2))
        return 1 if failing else 0
    print(f"hotline doctor: {len(checks)} checks, {len(failing)} failing")
    for check in checks:
        print(f"  {check.status:<5} {check.name:<11} {check.detail}")
        if check.fix and check.status != OK:
            print(f"  {'':<5} {'':<11} fix: {check.fix}")
    return 1 if failing else 0


def add_cli(sub) -> None:
    p = sub.add_parser("doctor", help="check the database, ARI, AMI, FastAGI, TTS and SIP, and say what to fix")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_doctor)
