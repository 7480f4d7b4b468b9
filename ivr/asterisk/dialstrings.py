"""Where an on-call number or a notification target is rung: its PJSIP dial string.

The same rule as the ARI controller's: a SIP URI through the endpoint ``hotline-direct``
(``PJSIP/hotline-direct/sip:alice@10.0.0.5:5060``), an E.164 number through the outbound trunk
(``PJSIP/+14155550100@<sip.outbound_trunk>``). A dial string that goes into a dialplan
application's arguments (Dial, over FastAGI) must not contain the characters that separate
arguments or options there.
"""

from __future__ import annotations

#: Characters that would split or end a Dial() argument, an option list or a Gosub argument.
_UNSAFE_IN_DIALPLAN = set(',&()|^"\\\'`$[]{}') | {" ", "\t", "\r", "\n"}


def dial_target(address: str, outbound_trunk: str) -> str | None:
    """What follows ``PJSIP/`` (Asterisk's DIALEDPEERNUMBER of the leg), or None when the
    address cannot be rung (an E.164 number without an outbound trunk)."""
    if address.startswith(("sip:", "sips:")):
        return f"hotline-direct/{address}"
    return f"{address}@{outbound_trunk}" if outbound_trunk else None


def endpoint_for(address: str, outbound_trunk: str) -> str | None:
    target = dial_target(address, outbound_trunk)
    return None if target is None else f"PJSIP/{target}"


def safe_in_dialplan(target: str) -> bool:
    """True when ``target`` can be written into a Dial() argument unquoted and unambiguous."""
    return bool(target) and not any(ch in _UNSAFE_IN_DIALPLAN for ch in target)
