"""The dialplan the FastAGI routes and notification calls rely on, as rendered from the configuration."""

from __future__ import annotations

import re

from ivr.asterisk.dialplan import render_config
from tests.unit.test_asterisk_conf import make_config


def test_fastagi_and_notification_contexts_point_at_the_configured_server():
    files = render_config(make_config(agi__host="0.0.0.0", agi__port=14573))
    ext = files["extensions.conf"]
    base = "agi://127.0.0.1:14573"
    assert "Set(CHANNEL(hangup_handler_push)=hotline-agi-leg-end,s,1(${ARG1},${DIALEDPEERNUMBER}))" in ext
    assert f"AGI({base}/leg-ended,${{ARG1}},${{ARG2}},${{HANGUPCAUSE}},${{CHANNEL(hangupsource)}})" in ext
    assert f"AGI({base}/leg-answered,${{ARG1}},${{DIALEDPEERNUMBER}})" in ext
    assert f"AGI({base}/notification,${{HOTLINE_CALL_LOG}})" in ext
    # Hotline says when it finished a call; otherwise the caller gets the last resort.
    assert '$["${HOTLINE_CALL_DONE}" = "1"]?done' in ext
    # A leg is never bridged unconfirmed when the FastAGI server does not answer.
    confirm = ext.split("\n[hotline-agi-confirm]", 1)[1].split("\n[", 1)[0]
    assert "Set(GOSUB_RESULT=CONTINUE)" in confirm
    # Dial's b() and U() subroutines and hangup handlers need app_stack.
    assert re.search(r"^load => app_stack.so$", files["modules.conf"], re.M)


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
