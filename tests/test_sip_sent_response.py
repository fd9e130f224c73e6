"""A sent response kept as its bytes reads its top Via from the Via lines
alone, and gives what a full parse of its bytes gives (errors included)."""

import pytest

from twisted_mfocus.sip.errors import ParseError
from twisted_mfocus.sip.message import Response, SentResponse, make_response, parse_datagram

REQUEST = (b"OPTIONS sip:u@h SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP a;branch=z9hG4bK1;rport, SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
           b"v: SIP/2.0/TCP c;branch=z9hG4bK3\r\n"
           b"From: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n")


def full_top_via(sent):
    return Response.top_via.fget(parse_datagram(sent.to_bytes()))


def test_top_via_of_a_response_we_made():
    request = parse_datagram(REQUEST)
    request.validate()
    sent = SentResponse(make_response(request, 200, to_tag="x"))
    assert sent._via_at is not None
    assert str(sent.top_via) == "SIP/2.0/UDP a;branch=z9hG4bK1;rport"
    assert str(sent.top_via) == str(full_top_via(sent))
    assert [str(v) for v in sent.vias] == ["SIP/2.0/UDP a;branch=z9hG4bK1;rport",
                                           "SIP/2.0/UDP b;branch=z9hG4bK2",
                                           "SIP/2.0/TCP c;branch=z9hG4bK3"]


def test_lines_nobody_read_are_parsed_as_they_came():
    response = parse_datagram(REQUEST.replace(b"OPTIONS sip:u@h SIP/2.0", b"SIP/2.0 200 OK")
                              .replace(b"Via: SIP/2.0/UDP a", b"VIA: SIP/2.0/UDP a"))
    sent = SentResponse(response)
    assert sent._via_at is None
    assert str(sent.top_via) == "SIP/2.0/UDP a;branch=z9hG4bK1;rport"


def test_a_bad_lower_via_raises_as_a_full_parse_does():
    request = parse_datagram(REQUEST.replace(b"SIP/2.0/TCP c", b"SIP/2.0/T@P c"))
    sent = SentResponse(make_response(request, 200, to_tag="x"))
    with pytest.raises(ParseError) as fast:
        sent.top_via
    with pytest.raises(ParseError) as full:
        full_top_via(sent)
    assert fast.value.reason == full.value.reason == "Malformed Via: bad transport"


def test_no_via():
    sent = SentResponse(Response(200))
    assert sent.top_via is None and sent._via_at == -1
