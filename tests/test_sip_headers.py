"""The header list as the parser fills it: Content-Length taken out, folding
undone, the section written back as it came while nobody changed it (and
never after a change), typed views built only when asked for."""

import pytest

from twisted_mfocus.sip.errors import FramingError, ParseError
from twisted_mfocus.sip.headers import Headers, split_section
from twisted_mfocus.sip.message import make_response, parse_datagram
from twisted_mfocus.sip.values import Via

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
INVITE = (b"INVITE sip:conf1@127.0.0.1:5060 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport\r\n"
          b"Max-Forwards: 70\r\n"
          b"Contact: <sip:alice@127.0.0.1:5071;transport=udp>\r\n"
          b"To: <sip:conf1@127.0.0.1:5060>\r\n"
          b"From: \"Alice\" <sip:alice@127.0.0.1:5071>;tag=9fx\r\n"
          b"Call-ID: 38482@127.0.0.1\r\n"
          b"CSeq: 1 INVITE\r\n"
          b"Content-Type: application/sdp\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(SDP), SDP))


def parsed(data=INVITE):
    m = parse_datagram(data)
    m.validate()
    return m


def test_an_unchanged_plain_message_goes_out_as_it_came():
    assert parsed().to_bytes() == INVITE


@pytest.mark.parametrize("change", [
    lambda h: h.add("Record-Route", "<sip:p;lr>"),
    lambda h: h.add("Via", "SIP/2.0/UDP p;branch=z9hG4bK2", first=True),
    lambda h: h.set("Max-Forwards", "69"),
    lambda h: h.remove("Contact"),
    lambda h: h.pop_first_value("Via"),
])
def test_any_change_is_written(change):
    m = parsed()
    change(m.headers)
    out = m.to_bytes()
    assert out != INVITE
    again = parse_datagram(out)
    assert list(again.headers) == list(m.headers)


def test_a_rewritten_top_via_is_written_and_parsed_once():
    m = parsed()
    via = Via.parse("SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport=5071;received=10.0.0.1")
    m.headers.pop_first_value("via")
    m.headers.add("Via", str(via), first=True)
    m.headers.seed_typed("via", Via.parse, [via])
    assert m.top_via is via
    assert b";received=10.0.0.1\r\n" in m.to_bytes()


def test_blanks_and_compact_names_are_written_canonically_once_read():
    data = INVITE.replace(b"Max-Forwards: 70", b"max-forwards :  70 ").replace(b"Call-ID:", b"i:")
    m = parse_datagram(data)
    assert m.to_bytes() == data          # never read: as it came
    m.validate()
    out = m.to_bytes()
    assert b"Max-Forwards: 70\r\n" in out and b"Call-ID: 38482@127.0.0.1\r\n" in out


def test_releasing_the_parsed_views_keeps_the_bytes():
    for data in (INVITE, INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards:70")):
        m = parsed(data)
        before = m.to_bytes()
        m.headers.release_parsed()
        assert m.to_bytes() == before and m.top_via.branch == "z9hG4bK-1"


def test_folded_lines_are_unfolded():
    data = INVITE.replace(b"Contact: <sip", b"Contact:\r\n  <sip").replace(
        b"CSeq: 1 INVITE", b"CSeq: 1\r\n\tINVITE")
    m = parsed(data)
    assert m.headers.get("contact") == "<sip:alice@127.0.0.1:5071;transport=udp>"
    assert m.cseq.method == "INVITE"
    assert m.to_bytes() == INVITE


def test_a_folded_content_length():
    data = INVITE.replace(b"Content-Length: ", b"Content-Length:\r\n ")
    assert parsed(data).body == SDP


@pytest.mark.parametrize("line,why", [
    (b"Content-Length", "Content-Length is not a non-negative number"),
    (b"l  ", "Content-Length is not a non-negative number"),
    (b"Content-Length: 1\r\nl: 2", "Conflicting Content-Length values"),
    (b"Content-Length: x", "Content-Length is not a non-negative number"),
])
def test_content_length_lines_in_any_form(line, why):
    data = INVITE.replace(b"Content-Length: %d" % len(SDP), line)
    with pytest.raises(FramingError) as info:
        parse_datagram(data)
    assert info.value.reason == why


def test_content_length_anywhere_any_case_is_taken_out():
    data = INVITE.replace(b"Content-Length: %d\r\n" % len(SDP), b"").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nCONTENT-LENGTH : %d\r\n" % len(SDP))
    m = parsed(data)
    assert m.body == SDP and "content-length" not in m.headers
    assert m.to_bytes() == INVITE


def test_a_line_without_a_colon_is_malformed_whatever_its_name():
    data = INVITE.replace(b"Max-Forwards: 70", b"Via")
    with pytest.raises(ParseError) as info:
        parsed(data)
    assert info.value.reason == "Malformed header line"


def test_validate_matches_the_common_shapes_without_building_them():
    m = parsed()
    assert not m.headers._cache              # nothing built yet
    assert m.top_via.branch == "z9hG4bK-1" and m.from_.tag == "9fx"
    assert m.contacts[0].uri.params == {"transport": "udp"}
    assert m.uri.port == 5060 and m.max_forwards == 70


@pytest.mark.parametrize("old,new,why", [
    (b"SIP/2.0/UDP 127.0.0.1:5071", b"SIP/2.0/U@P 127.0.0.1:5071", "Malformed Via: bad transport"),
    (b"rport\r\n", b"rport=x\r\n", "Malformed Via: bad rport"),
    (b"<sip:conf1@127.0.0.1:5060>", b"<sip:conf1@127.0.0.1:70000>", "Bad port in SIP URI host"),
    (b"CSeq: 1 INVITE", b"CSeq: 1 BYE", "CSeq method does not match the request method"),
    (b"INVITE sip:conf1@127.0.0.1:5060 SIP", b"INVITE sip:c@h?subject=x SIP",
     "Request-URI carries URI headers"),
])
def test_values_off_the_common_shape_get_the_full_parsers_reason(old, new, why):
    with pytest.raises(ParseError) as info:
        parsed(INVITE.replace(old, new))
    assert info.value.reason == why and info.value.message is not None


def test_a_response_to_a_validated_request_copies_the_lines():
    r = make_response(parsed(), 200, to_tag="abc")
    assert r.headers.get("to") == "<sip:conf1@127.0.0.1:5060>;tag=abc"
    assert r.headers.lines("via") == ["SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport"]


def test_split_section_alone():
    h, lengths = split_section("Via: SIP/2.0/UDP h\r\nl: 3\r\nX-Odd:  y ")
    out = []
    h.serialize_into(out)
    assert out == ["Via: SIP/2.0/UDP h\r\nX-Odd:  y ", "\r\n"]     # never read
    assert lengths == ["3"] and list(h) == [("Via", "SIP/2.0/UDP h"), ("X-Odd", "y")]
    assert h == Headers([("via", "Via", "SIP/2.0/UDP h"), ("x-odd", "X-Odd", "y")])
