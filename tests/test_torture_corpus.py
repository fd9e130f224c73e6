"""Every RFC 4475 / RFC 5118 torture message as a unit test of the parser.

The table mirrors each corpus's INDEX.md: valid messages parse, validate
and round-trip (parse → serialize → parse is equal, and serializing is
stable); invalid ones raise the typed error the INDEX describes.  The
SHA-256 of each file is checked so a changed corpus is noticed.
"""

import hashlib
import re

import pytest

from twisted_mfocus.sip.errors import FramingError, ParseError, VersionNotSupported
from twisted_mfocus.sip.message import Request, Response, StreamParser, parse_datagram

# name: None for valid, else (error class, status).
RFC4475 = {
    "wsinv": None, "intmeth": None, "esc01": None, "escnull": None,
    "lwsdisp": None, "longreq": None, "dblreq": None, "transports": None,
    "mpart01": None, "unreason": None,
    "badinv01": (ParseError, 400), "clerr": (FramingError, 400),
    "ncl": (FramingError, 400), "scalar02": (ParseError, 400),
    "quotbal": (ParseError, 400), "ltgtruri": (ParseError, 400),
    "lwsruri": (ParseError, 400), "escruri": (ParseError, 400),
    "baddate": None,                      # may be ignored: Date does not matter to us
    "badaspec": (ParseError, 400), "badvers": (VersionNotSupported, 505),
    "mismatch01": (ParseError, 400), "bigcode": (ParseError, 400),
    "badbranch": None,                    # parseable; RFC 2543 matching applies
    "insuf": (ParseError, 400),
    "unkscm": None, "bext01": None, "invut": None,   # well-formed: the UAS decides
    "multi01": (ParseError, 400), "mcl01": (FramingError, 400),
    "zeromf": None, "inv2543": None,
}
RFC5118 = {name: None for name in (
    "ipv6-good", "port-ambiguous", "port-unambiguous",
    "via-received-param-with-delim", "via-received-param-no-delim",
    "ipv6-in-sdp", "mult-ip-in-header", "mult-ip-in-sdp", "ipv4-mapped-ipv6",
    "ipv6-bug-abnf-3-colons", "ipv6-correct-abnf-2-colons")}
RFC5118["ipv6-bad"] = (ParseError, 400)

CASES = [("rfc4475", n, e) for n, e in RFC4475.items()] + \
        [("rfc5118", n, e) for n, e in RFC5118.items()]


def load(shared_dir, corpus, name):
    return (shared_dir / "sip-torture" / corpus / f"{name}.dat").read_bytes()


def parse(data):
    msg = parse_datagram(data)
    msg.validate()
    return msg


def test_table_covers_the_corpus(shared_dir):
    for corpus, table in (("rfc4475", RFC4475), ("rfc5118", RFC5118)):
        files = {p.stem for p in (shared_dir / "sip-torture" / corpus).glob("*.dat")}
        assert files == set(table)


def test_rfc4475_files_match_their_index_hashes(shared_dir):
    index = (shared_dir / "sip-torture" / "rfc4475" / "INDEX.md").read_text()
    hashes = dict(re.findall(r"\| `(\w+\.dat)` \|.*\| `([0-9a-f]{64})` \|", index))
    assert len(hashes) == len(RFC4475)
    for name, digest in hashes.items():
        data = (shared_dir / "sip-torture" / "rfc4475" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name


@pytest.mark.parametrize("corpus,name,expected", CASES, ids=[c[1] for c in CASES])
def test_torture_message(shared_dir, corpus, name, expected):
    data = load(shared_dir, corpus, name)
    if expected is None:
        msg = parse(data)
        out = msg.to_bytes()
        again = parse(out)
        assert again == msg
        assert again.to_bytes() == out
    else:
        cls, status = expected
        with pytest.raises(cls) as info:
            parse(data)
        assert info.value.status == status
        assert info.value.reason and info.value.reason != "Bad Request", \
            "the reason phrase must say what is wrong"


def test_esc01_unescapes_exactly_once(shared_dir):
    msg = parse(load(shared_dir, "rfc4475", "esc01"))
    contact = msg.contacts[0].uri
    assert contact.user == "caller"
    assert contact.params["name"] == "value%41"        # not valueA
    assert "lr" in contact.params
    assert msg.uri.user == "sips:user@example.com"
    assert msg.from_.uri.user == "I have spaces"


def test_escnull_keeps_the_nul(shared_dir):
    msg = parse(load(shared_dir, "rfc4475", "escnull"))
    assert msg.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in msg.contacts] == ["\x00", "\x00\x00"]


def test_dblreq_ignores_trailing_octets(shared_dir):
    msg = parse(load(shared_dir, "rfc4475", "dblreq"))
    assert msg.method == "REGISTER" and msg.body == b""
    assert b"INVITE" not in msg.to_bytes()


def test_inv2543_body_is_the_rest_of_the_datagram(shared_dir):
    data = load(shared_dir, "rfc4475", "inv2543")
    msg = parse(data)
    assert msg.body == data.split(b"\r\n\r\n", 1)[1] and msg.body.startswith(b"v=0")
    assert msg.top_via.branch is None and msg.from_.tag is None


def test_mpart01_binary_body_framed_by_content_length(shared_dir):
    data = load(shared_dir, "rfc4475", "mpart01")
    msg = parse(data)
    cl = int(re.search(rb"\r\nContent-Length: (\d+)", data).group(1))
    assert len(msg.body) == cl and b"\x00" in msg.body


def test_wsinv_unknown_header_kept_byte_exact(shared_dir):
    msg = parse(load(shared_dir, "rfc4475", "wsinv"))
    assert b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n" in msg.to_bytes()
    assert msg.max_forwards == 68 and msg.cseq.seq == 9
    assert msg.headers.get("subject") == ""
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert msg.from_.display == 'J Rosenberg \\"'


def test_intmeth_keeps_odd_characters(shared_dir):
    msg = parse(load(shared_dir, "rfc4475", "intmeth"))
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"


def test_unreason_keeps_the_utf8_reason(shared_dir):
    msg = parse(load(shared_dir, "rfc4475", "unreason"))
    assert isinstance(msg, Response) and msg.status == 200
    assert "простое" in msg.reason


def test_ipv6_references(shared_dir):
    amb = parse(load(shared_dir, "rfc5118", "port-ambiguous"))
    assert amb.uri.host == "[2001:db8::10:5070]" and amb.uri.port is None
    unamb = parse(load(shared_dir, "rfc5118", "port-unambiguous"))
    assert unamb.uri.host == "[2001:db8::10]" and unamb.uri.port == 5070
    nodelim = parse(load(shared_dir, "rfc5118", "via-received-param-no-delim"))
    assert nodelim.top_via.received == "2001:db8::9:255"
    assert nodelim.top_via.branch == "z9hG4bKas3"
    mapped = parse(load(shared_dir, "rfc5118", "ipv4-mapped-ipv6"))
    assert mapped.top_via.host == "[::ffff:192.0.2.10]" and mapped.top_via.port == 19823


@pytest.mark.parametrize("corpus,name", [(c, n) for c, n, e in CASES if e is None])
def test_stream_framing_gives_the_same_message(shared_dir, corpus, name):
    data = load(shared_dir, corpus, name)
    msg = parse(data)
    if isinstance(msg, Request) and msg.method == "REGISTER" and name == "dblreq":
        data = msg.to_bytes()            # the trailing octets are not a stream message
    elif not re.search(rb"\r\n(?:content-length|l)[ \t]*:", data, re.I):
        data = msg.to_bytes()            # RFC 2543 style: a stream needs Content-Length
    items = StreamParser().feed(data + data)
    assert items == [msg, msg] or [type(i) for i in items] == [type(msg)] * 2
    for item in items:
        item.validate()
        assert item == msg
