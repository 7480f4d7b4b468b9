"""The dialplan the FastAGI routes and notification calls rely on, as rendered from the configuration."""

from __future__ import annotations

import re

from ivr.asterisk.dialplan import CALLER_MAX, DIALED_MAX, render_config
from tests.unit.test_asterisk_conf import AGI_SECRET, make_config

SECRET_ARG = "${GLOBAL(HOTLINE_AGI_SECRET)}"


def code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(";")]


def context(ext: str, name: str) -> list[str]:
    """The dialplan lines of one context of extensions.conf."""
    return code_lines(ext.split(f"\n[{name}]\n", 1)[1].split("\n[", 1)[0])


def applications(lines: list[str], app: str) -> list[str]:
    """The argument strings of every ``app(...)`` call on these lines (to the line's last ')')."""
    found = []
    for line in lines:
        _, sep, rest = line.partition(f",{app}(")
        if sep:
            found.append(rest.rsplit(")", 1)[0])
    return found


def test_fastagi_and_notification_contexts_point_at_the_configured_server():
    files = render_config(make_config(agi__host="0.0.0.0", agi__port=14573))
    ext = files["extensions.conf"]
    base = "agi://127.0.0.1:14573"
    assert "Set(CHANNEL(hangup_handler_push)=hotline-agi-leg-end,s,1(${ARG1},${DIALEDPEERNUMBER}))" in ext
    assert f"AGI({base}/leg-ended,{SECRET_ARG},${{ARG1}},${{ARG2}},${{HANGUPCAUSE}},${{CHANNEL(hangupsource)}})" in ext
    assert f"AGI({base}/leg-answered,{SECRET_ARG},${{ARG1}},${{DIALEDPEERNUMBER}})" in ext
    assert f"AGI({base}/notification,{SECRET_ARG},${{HOTLINE_CALL_LOG}})" in ext
    # Hotline says when it finished a call; otherwise the caller gets the last resort.
    assert '$["${HOTLINE_CALL_DONE}" = "1"]?done' in ext
    # A leg is never bridged unconfirmed when the FastAGI server does not answer, stops or refuses
    # the request (a closed connection is AGISTATUS SUCCESS): only on Hotline's explicit word.
    confirm = context(ext, "hotline-agi-confirm")
    assert confirm[1:] == [' same => n,GotoIf($["${HOTLINE_LEG_CONFIRMED}" = "1"]?done)',
                           " same => n,Set(GOSUB_RESULT=CONTINUE)", " same => n(done),Return()"]
    assert "AGISTATUS" not in "".join(confirm)
    # Dial's b() and U() subroutines and hangup handlers need app_stack.
    assert re.search(r"^load => app_stack.so$", files["modules.conf"], re.M)


def test_every_fastagi_request_passes_the_secret_first():
    """The FastAGI server refuses a request without agi.secret as its first argument: every AGI()
    of the dialplan passes it, and the file holds it once, in a global."""
    ext = render_config(make_config(agi__port=14573))["extensions.conf"]
    calls = applications(code_lines(ext), "AGI")
    assert len(calls) == 4
    for call in calls:
        url, secret, *_ = call.split(",")
        assert url.startswith("agi://127.0.0.1:14573/") and secret == SECRET_ARG, call
    assert re.findall(r"^HOTLINE_AGI_SECRET = (.*)$", ext, re.M) == [AGI_SECRET]
    assert ext.count(AGI_SECRET) == 1
    # Rendered anew, another install's secret.
    other = render_config(make_config(agi__secret="another-install-0123456789"))["extensions.conf"]
    assert "HOTLINE_AGI_SECRET = another-install-0123456789" in other and AGI_SECRET not in other


def test_the_callers_number_and_caller_id_are_filtered_before_they_become_arguments():
    """`_[+*#0-9]!` constrains only the first character of ${EXTEN}: a ',' after it would add or
    shift an argument of Stasis() or AGI() (a caller ID likewise). Only the filtered and cut copies
    are passed on."""
    ext = render_config(make_config())["extensions.conf"]
    code = code_lines(ext)
    for app in ("Stasis", "AGI", "Gosub", "Dial"):
        for args in applications(code, app):
            assert "EXTEN" not in args and "CALLERID" not in args, (app, args)
    inbound = context(ext, "hotline-inbound")
    dialed_filter = "Set(HOTLINE_DIALED=${FILTER(0-9+*#,${EXTEN})})"
    caller_filter = "Set(HOTLINE_CALLER=${FILTER(0-9+,${CALLERID(num)})})"
    # Cut in a step of their own, on the filtered value: a caller's ")" then ":" can move the cut of ${FILTER(...)}.
    dialed_cut = f"Set(HOTLINE_DIALED=${{HOTLINE_DIALED:0:{DIALED_MAX}}})"
    caller_cut = f"Set(HOTLINE_CALLER=${{HOTLINE_CALLER:0:{CALLER_MAX}}})"
    extensions: dict[str, list[str]] = {}
    current = None
    for line in inbound:
        if line.startswith("exten => "):
            current = line[len("exten => "):].split(",", 1)[0]
        extensions.setdefault(current, []).append(line.split(",", 2)[2] if line.startswith("exten") else
                                                  line.split(",", 1)[1])
    assert set(extensions) == {"_[+*#0-9]!", "s"}
    for exten, steps in extensions.items():
        stasis = next(i for i, step in enumerate(steps) if step.startswith("Stasis("))
        before = steps[:stasis]
        expected_dialed = [dialed_filter, dialed_cut] if exten != "s" else ["Set(HOTLINE_DIALED=s)"]
        assert [s for s in before if s.startswith("Set(HOTLINE_DIALED=")] == expected_dialed, exten
        assert [s for s in before if s.startswith("Set(HOTLINE_CALLER=")] == [caller_filter, caller_cut], exten
        assert steps[stasis] == ("Stasis(hotline,incoming,${HOTLINE_DIALED})" if exten != "s"
                                 else "Stasis(hotline,incoming,s)")
    # Nothing else sets them, and the fallback passes exactly these two after the secret.
    assert sum("Set(HOTLINE_DIALED=" in line for line in code) == 3
    assert sum("Set(HOTLINE_CALLER=" in line for line in code) == 4
    [fallback] = applications(context(ext, "hotline-fallback"), "AGI")
    assert fallback.split(",")[1:] == [SECRET_ARG, "${HOTLINE_DIALED}", "${HOTLINE_CALLER}"]
    assert DIALED_MAX <= 32 and CALLER_MAX <= 32   # the width of the logs' number columns


def test_the_ami_user_cannot_originate_into_agi_or_run_commands():
    manager = render_config(make_config())["manager.conf"]
    write = re.search(r"^write = (.*)$", manager, re.M).group(1).split(",")
    assert "system" not in write and "command" not in write and "originate" in write and "call" in write


def test_ami_sends_only_the_events_hotline_reads():
    manager = render_config(make_config())["manager.conf"]
    [whitelist] = re.findall(r"^eventfilter = (.*)$", manager, re.M)
    pattern = re.compile(whitelist.replace("[[:space:]]", r"\s"))  # POSIX class, as Asterisk's regex reads it
    for event in ("OriginateResponse", "Hangup", "HangupRequest", "SoftHangupRequest", "FullyBooted", "Shutdown"):
        assert pattern.search(f"Event: {event}\r\nPrivilege: call,all\r\n"), event
    for event in ("Newchannel", "Newstate", "VarSet", "DialBegin", "HangupHandlerRun", "RTCPSent"):
        assert not pattern.search(f"Event: {event}\r\nPrivilege: call,all\r\n"), event
