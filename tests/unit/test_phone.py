import pytest

from ivr.asterisk.dialstrings import NotDialable, endpoint_for
from ivr.core.phone import (
    InvalidNumber,
    area_code_of,
    destination_key,
    region_of,
    sip_host_allowed,
    spoken_digits,
    to_e164,
    validate_sip_uri,
)


@pytest.mark.parametrize("text,region,expected", [
    ("+1 (415) 555-0100", "US", "+14155550100"),
    ("(415) 555-0100", "US", "+14155550100"),
    ("020 7183 8750", "GB", "+442071838750"),
    ("+44 20 7183 8750", "US", "+442071838750"),
    ("01 23 45 67 89", "FR", "+33123456789"),
])
def test_e164(text, region, expected):
    assert to_e164(text, region) == expected


@pytest.mark.parametrize("text", ["", "abc", "123", "+1 415 555", "+999 123456"])
def test_invalid_numbers(text):
    with pytest.raises(InvalidNumber):
        to_e164(text)


def test_region_and_area():
    assert region_of("+442071838750") == "GB" and area_code_of("+442071838750") == "20"
    assert region_of("+14155550100") == "US" and area_code_of("+14155550100") == "415"


def test_spoken_digits():
    assert spoken_digits("+14155550100") == "plus 1, 4 1 5, 5 5 5, 0 1 0 0"
    assert spoken_digits("anonymous") == "an unknown number"


@pytest.mark.parametrize("uri", ["sip:alice@10.0.0.5:5060", "sip:alice@pbx.example.com", "sips:bob@[::1]:5061",
                                 "sip:1000@127.0.0.1;transport=udp"])
def test_sip_uris(uri):
    assert validate_sip_uri(uri) == uri


@pytest.mark.parametrize("uri", ["alice@host", "sip:", "sip:a@b:0", "http://x", "sip:a b@c"])
def test_bad_sip_uris(uri):
    with pytest.raises(InvalidNumber):
        validate_sip_uri(uri)


ALLOWED = ["127.0.0.0/8", "::1", "10.0.0.0/8", "pbx.example.com"]


@pytest.mark.parametrize(("uri", "allowed"), [
    ("sip:alice@127.0.0.1:5062", True), ("sip:alice@10.20.30.40", True), ("sip:alice@[::1]:5060", True),
    ("sip:desk@PBX.example.com", True), ("sips:desk@pbx.example.com;transport=tls", True),
    ("sip:premium@203.0.113.5", False), ("sip:x@pbx.example.com.evil.net", False), ("sip:x@11.0.0.1", False),
    ("sip:x@10.0.0.1@203.0.113.5", False), ("not a uri", False),
])
def test_sip_uris_only_to_allowed_hosts(uri, allowed):
    assert sip_host_allowed(uri, ALLOWED) is allowed


def test_the_dial_string_refuses_what_cannot_be_rung():
    assert endpoint_for("sip:a@10.0.0.5:5060", "", ALLOWED) == "PJSIP/hotline-direct/sip:a@10.0.0.5:5060"
    assert endpoint_for("+14155550100", "carrier", ALLOWED) == "PJSIP/+14155550100@carrier"
    with pytest.raises(NotDialable, match="sip.allowed_hosts"):
        endpoint_for("sip:a@203.0.113.5", "carrier", ALLOWED)
    with pytest.raises(NotDialable, match="sip.outbound_trunk"):
        endpoint_for("+14155550100", "", ALLOWED)


@pytest.mark.parametrize(("spellings", "key"), [
    (["+14155550100"], "+14155550100"),
    (["sip:alice@pbx.example", "sip:Alice@PBX.Example", "SIP:alice@pbx.example:5060",
      "sip:alice@pbx.example;transport=tcp", "sips:alice@pbx.example:5061", "sip:%61lice@pbx.example",
      " sip:alice@pbx.example:05060;lr "], "sip:alice@pbx.example"),
    (["sip:alice@10.0.0.5:5062", "sip:alice@10.0.0.5:05062;transport=udp"], "sip:alice@10.0.0.5:5062"),
    (["sip:[2001:DB8::1]:5060", "sip:[2001:db8::1]"], "sip:[2001:db8::1]"),
])
def test_spellings_of_one_destination_share_one_key(spellings, key):
    """The key of a destination's verification guard: another spelling of a SIP URI must not get a
    fresh count of wrong codes (or of codes sent)."""
    assert {destination_key(text) for text in spellings} == {key}


def test_different_destinations_keep_different_keys():
    keys = {destination_key(text) for text in ("sip:alice@pbx.example", "sip:bob@pbx.example",
                                               "sip:alice@pbx.example:5070", "sip:alice@other.example",
                                               "+14155550100", "+14155550101")}
    assert len(keys) == 6
