"""Where an on-call number or a notification target is rung: its PJSIP dial string.

The one rule: a SIP URI through the endpoint ``hotline-direct``
(``PJSIP/hotline-direct/sip:alice@10.0.0.5:5060``), only towards a host of ``sip.allowed_hosts``;
an E.164 number through the outbound trunk (``PJSIP/+14155550100@<sip.outbound_trunk>``). A dial
string that goes into a dialplan application's arguments (Dial, over FastAGI) must not contain the
characters that separate arguments or options there.
"""

from __future__ import annotations

from ivr.core.phone import sip_host_allowed

#: Characters that would split or end a Dial() argument, an option list or a Gosub argument.
_UNSAFE_IN_DIALPLAN = set(',&()|^"\\\'`$[]{}') | {" ", "\t", "\r", "\n"}


class NotDialable(ValueError):
    """Why an address cannot be rung (the words go into the ring attempt's log)."""


def dial_target(address: str, outbound_trunk: str, allowed_hosts=None) -> str:
    """What follows ``PJSIP/`` (Asterisk's DIALEDPEERNUMBER of the leg). ``allowed_hosts``: the hosts a
    SIP URI may point at (None: the caller checked them). Raises :class:`NotDialable`."""
    if address.startswith(("sip:", "sips:")):
        if allowed_hosts is not None and not sip_host_allowed(address, allowed_hosts):
            raise NotDialable(f"{address} points at a host that sip.allowed_hosts does not list")
        return f"hotline-direct/{address}"
    if not outbound_trunk:
        raise NotDialable("no outbound trunk is configured for phone numbers (sip.outbound_trunk)")
    return f"{address}@{outbound_trunk}"


def endpoint_for(address: str, outbound_trunk: str, allowed_hosts=None) -> str:
    return f"PJSIP/{dial_target(address, outbound_trunk, allowed_hosts)}"


def safe_in_dialplan(target: str) -> bool:
    """True when ``target`` can be written into a Dial() argument unquoted and unambiguous."""
    return bool(target) and not any(ch in _UNSAFE_IN_DIALPLAN for ch in target)
