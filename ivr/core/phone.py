"""Phone numbers and SIP URIs: every number goes through phonenumbers."""

from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse

import phonenumbers


class InvalidNumber(ValueError):
    """The text is not a usable phone number; the message says why."""


_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "its country code does not exist",
    phonenumbers.ValidationResult.TOO_SHORT: "it is too short",
    phonenumbers.ValidationResult.TOO_LONG: "it is too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "it has the wrong number of digits",
}


def parse_number(text: str, region: str = "US") -> phonenumbers.PhoneNumber:
    if not isinstance(text, str) or not text.strip():
        raise InvalidNumber("a phone number is required")
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"{text!r} is not a phone number ({exc._msg.rstrip('.')})") from None
    if not phonenumbers.is_valid_number(number):
        reason = _REASONS.get(phonenumbers.is_possible_number_with_reason(number), "it is not a valid number")
        raise InvalidNumber(f"{text!r} is not a valid phone number: {reason}")
    return number


@functools.lru_cache(maxsize=4096)
def to_e164(text: str, region: str = "US") -> str:
    """``text`` in E.164 (``+14155550100``), national formats read in ``region``."""
    return phonenumbers.format_number(parse_number(text, region), phonenumbers.PhoneNumberFormat.E164)


def display(e164: str, *, national: bool = False) -> str:
    """An E.164 number as people read it: international (``+1 339-219-5276``, the calls API) or
    national (``(339) 219-5276``, said by a prompt); anything unparsable unchanged."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    style = phonenumbers.PhoneNumberFormat.NATIONAL if national else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    return phonenumbers.format_number(number, style)


def normalize_loose(text: str, region: str = "US") -> str:
    """E.164 when ``text`` is a valid number, else ``text`` unchanged (for filters and caller IDs)."""
    try:
        return to_e164(text, region)
    except InvalidNumber:
        return text


def region_of(e164: str) -> str | None:
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))


def area_code_of(e164: str) -> str | None:
    number = phonenumbers.parse(e164, None)
    national = phonenumbers.national_significant_number(number)
    length = phonenumbers.length_of_geographical_area_code(number)
    return national[:length] if length else None


def spoken_digits(text: str) -> str:
    """A number read digit by digit by a speech synthesizer: "+1 4 1 5 ..." -> "plus 1, 4 1 5, ...".

    Grouped as the number's international format groups it, so it is heard the way it is written.
    """
    try:
        number = phonenumbers.parse(text, None)
        grouped = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        grouped = text
    groups = re.findall(r"\+?\d+", grouped)
    if not groups:
        return "an unknown number"
    spoken = []
    for group in groups:
        prefix = "plus " if group.startswith("+") else ""
        spoken.append(prefix + " ".join(group.lstrip("+")))
    return ", ".join(spoken)


_SIP_URI = re.compile(
    r"^sips?:"
    r"(?:(?P<user>[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)"
    r"(?::(?P<port>\d{1,5}))?"
    r"(?P<params>(?:;[A-Za-z0-9\-_.!~*'()%]+(?:=[A-Za-z0-9\-_.!~*'()%]+)?)*)$"
)


def validate_sip_uri(text: str) -> str:
    """The URI unchanged if it is a plain SIP URI Asterisk can dial, else InvalidNumber."""
    if not isinstance(text, str):
        raise InvalidNumber("a SIP URI must be a string like sip:alice@10.0.0.5:5060")
    match = _SIP_URI.match(text.strip())
    if not match:
        raise InvalidNumber(f"{text!r} is not a SIP URI (expected e.g. sip:alice@10.0.0.5:5060)")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidNumber(f"{text!r}: the port must be between 1 and 65535")
    return text.strip()


def sip_host(uri: str) -> str:
    """The host of a SIP URI (brackets of an IPv6 address removed), lower-case."""
    match = _SIP_URI.match(uri.strip())
    if not match:
        raise InvalidNumber(f"{uri!r} is not a SIP URI (expected e.g. sip:alice@10.0.0.5:5060)")
    return match.group("host").strip("[]").lower()


def sip_host_allowed(uri: str, allowed: list[str] | tuple[str, ...]) -> bool:
    """Whether ``uri`` points at a host of ``allowed`` (IP addresses, CIDR networks or host names, as the
    setting ``sip.allowed_hosts`` lists them). A host name is allowed only when listed as such."""
    try:
        host = sip_host(uri)
    except InvalidNumber:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in allowed:
        entry = str(entry).strip().lower()
        if address is None:
            if entry == host:
                return True
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name entry: it does not match an address
    return False


_DEFAULT_PORTS = {"sip": "5060", "sips": "5061"}


def destination_key(address: str) -> str:
    """What a number reaches, as one text: the key of its verification guard (codes sent, wrong
    codes, the lock), which must not be shed by spelling the same destination another way.

    E.164 is already canonical and is kept. A SIP URI is reduced to what picks the phone: scheme and
    host in lowercase, the user part %-decoded and in lowercase, the scheme's default port dropped,
    parameters dropped, ``sips:`` written ``sip:``; ``sip:Alice@PBX.example:5060;transport=tcp`` and
    ``sip:alice@pbx.example`` are one destination. Anything else is returned stripped.
    """
    text = re.sub(r"^(?i:sips?):", lambda scheme: scheme.group(0).lower(), address.strip())
    match = _SIP_URI.match(text)
    if not match:
        return text
    scheme = text.split(":", 1)[0].lower()
    user = urllib.parse.unquote(match.group("user") or "").lower()
    host = match.group("host").lower()
    port = match.group("port")
    if port is not None:
        port = str(int(port))
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    return "sip:" + (f"{user}@" if user else "") + host + (f":{port}" if port else "")
