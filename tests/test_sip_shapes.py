"""The common-shape matchers (sip/shapes.py) against the full parsers.

A shape may only accept what the full parser accepts, and must then mean
the same: for every value a shape matches, the fast build equals the full
parser's result; a value it does not match goes to the full parser, which
gives the answer or the reason (so errors never come from a shape).
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from twisted_mfocus.sip import shapes
from twisted_mfocus.sip.errors import ParseError
from twisted_mfocus.sip.uri import URI, parse_hostport
from twisted_mfocus.sip.values import CSeq, NameAddr, Via

FUZZ = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Pieces SIP values are made of, odd ones included: the fuzzed values land
# on both sides of every shape's boundary.
PIECES = list("abcAZ09-_.!%*+`'~:;=@<>\"\\ ,?&$/()[]#\t") + [
    "sip:", "sips:", "SIP:", "tel:", "SIP/2.0/", "sip/2.0/", "UDP ", "tls", "127.0.0.1",
    "h-1.ex.com",
    "a--b", "a-", "-a", "a..b", "[2001:db8::1]", "[::ffff:192.0.2.1]", ":5060", ":65535", ":65536",
    ":0", ":099999", ";tag=x", ";rport", ";rport=5", ";RPORT=70000", ";rportx=q", ";ttl=255",
    ";ttl=256", ";TTL=09", ";branch=z9hG4bK", ";lr", ";transport=udp", ";x=", "%41", "%zz",
    '"A b" ', "Bob Smith ", "<", ">", "\x00", "\xe9", "\xa0", "\x0b", "\u0663", "user@", "u:pw@",
    "?subject=x", '"<urn:x>"', "*",
]
BASES = {
    "via": ["SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport",
            "SIP/2.0/TCP [2001:db8::1]:5061;received=192.0.2.4;ttl=5",
            "SIP/2.0/TLS h.example"],
    "name-addr": ['"Alice" <sip:alice@127.0.0.1:5071>;tag=9f', "<sip:conf@h:5060;transport=udp;lr>",
                  "sip:bob@h;tag=1",
                  'Bob Smith <sips:b@[::1]:5061>;expires=60;+sip.instance="<u>"'],
    "uri": ["sip:conf1@127.0.0.1:5060", "sips:a@b.example;transport=tcp;lr", "sip:h", "sip:u@h;x="],
    "cseq": ["1 INVITE", "4294967295 ACK", "123456789 BYE"],
}


@st.composite
def mutated(draw, kind):
    text = draw(st.sampled_from(BASES[kind]))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(PIECES)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 4)):]
        else:
            text = text[:pos] + draw(st.sampled_from(PIECES)) + text[pos + 1:]
    return text


def outcome(parse, text):
    """What a parser makes of ``text``: its value's fields, or its error."""
    try:
        value = parse(text)
    except ParseError as e:
        return ("error", e.reason)
    if isinstance(value, URI):
        return ("uri", value.scheme, value.user, value.password, value.host, value.port,
                value.params, value.headers, value.opaque, str(value))
    if isinstance(value, Via):
        return ("via", value.transport, value.host, value.port, value.params, str(value))
    if isinstance(value, CSeq):
        return ("cseq", value.seq, value.method)
    return ("name-addr", value.display, value.params, value.wildcard,
            outcome(lambda _: value.uri, None) if value.uri else None, str(value))


def cseq_full(text):
    """CSeq.parse without its fast path: the general rule of §20.16."""
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > 0xFFFFFFFF:
        raise ParseError("Malformed CSeq")
    return CSeq(int(parts[0]), parts[1])


CASES = {  # kind: (shape that checks, fast parser, full parser)
    "via": (shapes.via_shape, Via.parse, Via._parse_any),
    "name-addr": (shapes.name_addr_shape, lambda t: NameAddr.parse(t, "To"),
                  lambda t: NameAddr._parse_any(t, "To")),
    "uri": (shapes.sip_uri_shape, URI.parse, URI._parse_any),
}


@pytest.mark.parametrize("kind", sorted(CASES))
@FUZZ
@given(data=st.data())
def test_a_shape_accepts_only_what_the_full_parser_accepts_and_means_the_same(kind, data):
    text = data.draw(mutated(kind))
    shape, fast, full = CASES[kind]
    assert outcome(fast, text) == outcome(full, text)
    if shape(text) is not None:
        assert outcome(full, text)[0] != "error"


@FUZZ
@given(mutated("cseq"))
def test_the_cseq_shape_means_what_the_general_rule_means(text):
    if shapes.cseq_shape(text) is not None:
        assert outcome(CSeq.parse, text) == outcome(cseq_full, text)


def test_the_checking_shapes_match_exactly_what_the_capturing_ones_match():
    pairs = [(shapes.via_shape, shapes.via_parts, "via"),
             (shapes.name_addr_shape, shapes.name_addr_parts, "name-addr"),
             (shapes.sip_uri_shape, shapes.sip_uri_parts, "uri")]
    for check, parts, kind in pairs:
        assert check.__self__.groups == 0
        for text in BASES[kind] + [b + p for b in BASES[kind] for p in PIECES]:
            assert (check(text) is None) == (parts(text) is None), text


def port_rule(text):
    """The port rule of ``parse_hostport``."""
    try:
        return parse_hostport("h:" + text)[1] is not None
    except ParseError:
        return False


def test_port_range_as_the_parser_takes_it():
    """Every string of one to six digits: the URI shape takes it as a port
    exactly when ``parse_hostport`` does (five digits at most, <= 65535)."""
    for digits in range(1, 7):
        step = 1 if digits <= 5 else 997
        for n in range(0, 10 ** digits, step):
            port = str(n).zfill(digits)
            matched = shapes.sip_uri_shape(f"sip:h:{port}") is not None
            assert matched == port_rule(port), port


def test_rport_and_ttl_ranges():
    for n in range(0, 1000):
        for text in (str(n), str(n).zfill(3)):
            via = f"SIP/2.0/UDP h;ttl={text}"
            assert (shapes.via_shape(via) is not None) == (n <= 255), via
    assert shapes.via_shape("SIP/2.0/UDP h;rport=65535") is not None
    for bad in ("rport=65536", "rport=abc", "RPort=", "ttl=", "TTL=x"):
        assert shapes.via_shape(f"SIP/2.0/UDP h;{bad}") is None, bad
    assert shapes.via_shape("SIP/2.0/UDP h;rportx=abc;ttlx=q") is not None


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-524287-1---ab12cd34ef;rport",
    "SIP/2.0/TCP pbx-1.example.com;branch=z9hG4bK1;received=[2001:db8::9]",
    "SIP/2.0/UDP [::ffff:192.0.2.10]:19823;rport=5060;received=192.0.2.1",
])
def test_common_vias_take_the_fast_path(text):
    assert shapes.via_shape(text) is not None


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP  h", "SIP/2.0/UDP h ;branch=1", "sip/2.0/udp h", "SIP/2.0/UDP h:",
    "SIP/2.0/UDP h;branch=\"q\"", "SIP/2.0/UDP -h", "SIP/2.0/UDP h..x", "SIP/2.0/UDP h;;x",
])
def test_unusual_vias_go_to_the_full_parser(text):
    assert shapes.via_shape(text) is None


@pytest.mark.parametrize("text", [
    '"Alice" <sip:alice@127.0.0.1:5071>;tag=9fxced76sl', "<sip:conf1@127.0.0.1:5060>",
    "<sip:alice@127.0.0.1:5071;transport=udp>", "sip:bob@example.com;tag=1",
    "Bob Smith <sips:bob@[2001:db8::1]:5061;lr>;expires=60",
    '<sip:a@h>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1',
])
def test_common_name_addrs_take_the_fast_path(text):
    assert shapes.name_addr_shape(text) is not None


@pytest.mark.parametrize("text", [
    "*", "<sip:a%40b@h>", "< sip:a@h>", "sip:a,b@h", "sip:a@h?x=y", "<sip:a:pw@h>",
    '"a \\" b" <sip:a@h>', "<sip:a@h>;tag=", "<sip:a@h> ;tag=1", "<tel:+1234>",
])
def test_unusual_name_addrs_go_to_the_full_parser(text):
    assert shapes.name_addr_shape(text) is None
