"""Focused unit tests of the message layer: names, lists, URIs, Via, ranges,
limits and stream framing."""

import pytest

from twisted_mfocus.sip.errors import FramingError, ParseError, TooLarge
from twisted_mfocus.sip.headers import COMPACT, split_list
from twisted_mfocus.sip.values import NameAddr, Via
from twisted_mfocus.sip.message import (PING, Limits, Request, StreamParser, make_response,
                                        parse_datagram)
from twisted_mfocus.sip.uri import URI


def msg(extra="", first="OPTIONS sip:u@example.com SIP/2.0", cseq="1 OPTIONS", body=b"",
        cl=True):
    text = (f"{first}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
            f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:u@example.com>\r\n"
            f"Call-ID: c1\r\nCSeq: {cseq}\r\n{extra}")
    if cl:
        text += f"Content-Length: {len(body)}\r\n"
    m = parse_datagram(text.encode() + b"\r\n" + body)
    return m


@pytest.mark.parametrize("compact,long", sorted(COMPACT.items()))
def test_every_compact_form(compact, long):
    value = "7" if long == "content-length" else "x"
    m = parse_datagram(f"OPTIONS sip:u@h SIP/2.0\r\n{compact.upper()}: {value}\r\n\r\n"
                       f"{'b' * 7}".encode())
    if long == "content-length":             # framing: it becomes the body length
        assert m.body == b"b" * 7 and long not in m.headers
    else:
        assert m.headers.get(long) == "x" and m.headers.get(compact) == "x"


def test_names_are_case_insensitive_and_unknown_spelling_kept():
    m = msg("mAx-FoRwArDs: 5\r\nX-Odd-Name: keep  me \r\n")
    assert m.max_forwards == 5
    assert b"X-Odd-Name: keep  me\r\n" in m.to_bytes() or b"X-Odd-Name: keep  me \r\n" in m.to_bytes()
    m.headers.get("x-odd-name")          # touch: the list is split now
    assert b"X-Odd-Name: keep  me\r\n" in m.to_bytes()


def test_list_split_outside_quotes_and_brackets():
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == \
        ['"a, b" <sip:x@y;p=1,2>', "<sip:z@w>"]
    m = msg('Contact: "Doe, J" <sip:j@h>, <sip:k@h>;q=0.5\r\nContact: <sip:l@h>\r\n')
    assert [str(c.uri) for c in m.contacts] == ["sip:j@h", "sip:k@h", "sip:l@h"]
    assert m.contacts[0].display == "Doe, J" and m.contacts[1].params["q"] == "0.5"


def test_subject_is_not_split():
    m = msg("Subject: one, two\r\n")
    assert m.headers.get_all("subject") == ["one, two"]


def test_folding_joins_with_one_space():
    m = msg("Subject: one\r\n   two\r\n\tthree\r\n")
    assert m.headers.get("subject") == "one two three"


def test_sips_tel_and_ipv6_uris():
    u = URI.parse("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi%20there")
    assert (u.scheme, u.user, u.password, u.host, u.port) == \
        ("sips", "alice", "secret", "[2001:db8::1]", 5061)
    assert u.transport == "tcp" and u.params["lr"] is None
    assert u.headers == [("subject", "hi there")]
    assert URI.parse(str(u)) == u
    t = URI.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert t.scheme == "tel" and t.user == "+1-201-555-0123"
    assert t.params["phone-context"] == "example.com"
    assert URI.parse(str(t)) == t
    assert URI.parse("SIP:Bob@Example.COM") == URI.parse("sip:Bob@example.com")
    assert URI.parse("sip:bob@example.com") != URI.parse("sip:BOB@example.com")


@pytest.mark.parametrize("bad", ["sip:", "sip:a@", "sip:a@b:99999", "sip:a@[::1", "sip:a b@c",
                                 "sip:a@b;=x", "sip:%zz@b", "nocolon", "sip:a@b?x"])
def test_bad_uris(bad):
    with pytest.raises(ParseError):
        URI.parse(bad)


def test_escaping_is_decoded_once():
    u = URI.parse("sip:%2541@h;p=%2525")
    assert u.user == "%41" and u.params["p"] == "%25"
    assert URI.parse(str(u)).user == "%41"


def test_name_addr_vs_addr_spec_params():
    na = NameAddr.parse("sip:a@b;tag=9")
    assert na.tag == "9" and "tag" not in na.uri.params        # §20.10
    na = NameAddr.parse("<sip:a@b;lr>;tag=9")
    assert na.tag == "9" and "lr" in na.uri.params
    na = NameAddr.parse('"A \\"B\\"" <sip:a@b>')
    assert na.display == 'A "B"'
    assert NameAddr.parse(str(na)) == na


def test_via_parameters():
    v = Via.parse("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKx;rport;received=192.0.2.9;"
                  "maddr=224.2.0.1;ttl=16")
    assert v.transport == "UDP" and v.host == "[2001:db8::1]" and v.port == 5070
    assert v.branch == "z9hG4bKx" and v.rport is True and v.received == "192.0.2.9"
    assert v.maddr == "224.2.0.1" and v.ttl == 16
    assert Via.parse("SIP/2.0/TCP h;rport=5999").rport == 5999
    assert Via.parse("SIP/2.0/TLS h").sent_by == ("h", 5061)
    for bad in ("SIP/2.0/UDP h;ttl=300", "SIP/2.0/UDP h;rport=x", "SIP/2.0 h", "SIP/3.0/UDP h"):
        with pytest.raises(ParseError):
            Via.parse(bad)


def test_ranges():
    msg(cseq="4294967295 OPTIONS").validate()
    with pytest.raises(ParseError, match="CSeq"):
        msg(cseq="4294967296 OPTIONS").validate()
    msg("Max-Forwards: 255\r\n").validate()
    with pytest.raises(ParseError, match="Max-Forwards"):
        msg("Max-Forwards: 256\r\n").validate()
    for code in (b"99", b"700", b"1000", b"2x0"):
        with pytest.raises(ParseError):
            parse_datagram(b"SIP/2.0 " + code + b" X\r\nVia: SIP/2.0/UDP h\r\n\r\n")
    assert parse_datagram(b"SIP/2.0 699 X\r\n\r\n").status == 699
    with pytest.raises(FramingError):
        msg("Content-Length: 1x\r\n", cl=False)


def test_limits():
    small = Limits(max_head=200, max_body=10, max_headers=5)
    with pytest.raises(TooLarge):
        parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 6 + b"\r\n", small)
    with pytest.raises(TooLarge):
        parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 300 + b"\r\n\r\n", small)
    with pytest.raises(TooLarge):
        parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 11\r\n\r\n" + b"z" * 11, small)


def test_stream_pipelining_ping_and_errors():
    one = msg().to_bytes()
    p = StreamParser()
    items = p.feed(b"\r\n\r\n" + one + one[:10])
    assert items[0] is PING and isinstance(items[1], Request) and len(items) == 2
    items = p.feed(one[10:] + b"GARBAGE\r\nContent-Length: 0\r\n\r\n"
                   + b"OPTIONS sip:a@b SIP/2.0\r\nNoColonHere\r\nContent-Length: 0\r\n\r\n" + one)
    assert isinstance(items[0], Request)
    assert isinstance(items[1], ParseError)        # framed, but no Request-Line
    assert isinstance(items[2], Request)           # framed; a header line is bad
    with pytest.raises(ParseError, match="Malformed header line"):
        items[2].validate()
    assert isinstance(items[3], Request), "bad messages do not kill the stream"
    dead = StreamParser()
    items = dead.feed(one + b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n" + one)
    assert isinstance(items[0], Request) and isinstance(items[-1], FramingError)
    assert len(items) == 2 and dead.feed(one) == []


def test_make_response_copies_and_tags():
    req = msg("Timestamp: 54\r\n", first="INVITE sip:u@example.com SIP/2.0", cseq="7 INVITE")
    req.headers.add("Via", "SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK2")
    r = make_response(req, 486, to_tag="t9")
    assert r.headers.lines("via") == req.headers.lines("via")
    assert r.to.tag == "t9" and r.from_.tag == "1" and r.call_id == "c1"
    assert str(r.cseq) == "7 INVITE" and r.reason == "Busy Here"
    trying = make_response(req, 100, to_tag="t9")
    assert trying.to.tag is None and trying.headers.get("timestamp") == "54"


def test_a_repeated_uri_parameter_keeps_its_first_value():
    """baresip 1.0 repeats ;transport and ;lr: accepted, the first wins."""
    from twisted_mfocus.sip.uri import URI
    uri = URI.parse("sip:a@127.0.0.1:5060;transport=udp;lr;transport=tcp;lr")
    assert uri.params == {"transport": "udp", "lr": None}
