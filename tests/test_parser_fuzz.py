"""Hypothesis: mutated messages only ever give a message or a SIPError, and
stream framing does not depend on how the bytes are split."""


from hypothesis import HealthCheck, given, settings, strategies as st

from twisted_mfocus.sip.errors import SIPError
from twisted_mfocus.sip.message import Request, StreamParser, parse_datagram

from .conftest import SHARED

VALID = ["wsinv", "intmeth", "esc01", "escnull", "lwsdisp", "longreq", "transports",
         "mpart01", "unreason", "baddate", "badbranch", "unkscm", "bext01", "invut",
         "zeromf", "inv2543"]
SEEDS = [(SHARED / "sip-torture" / "rfc4475" / f"{n}.dat").read_bytes() for n in VALID] + \
        [p.read_bytes() for p in sorted((SHARED / "sip-torture" / "rfc5118").glob("*.dat"))]
FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dupline", "special"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "dupline":
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        else:
            data[pos:pos] = draw(st.sampled_from(
                [b"\r\n", b"\r\n ", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"[",
                 b"]", b"@", b"\x00", b"\r\n\r\n", b"Content-Length: 99999999999\r\n"]))
    return bytes(data)


def exercise(msg):
    """Touch everything a transaction or TU would read."""
    msg.validate()
    msg.vias, msg.from_, msg.to, msg.cseq, msg.contacts, msg.routes, msg.max_forwards
    if isinstance(msg, Request):
        msg.uri
    parse_datagram(msg.to_bytes())


@FUZZ
@given(mutated())
def test_mutations_only_raise_typed_errors(data):
    try:
        exercise(parse_datagram(data))
    except SIPError:
        pass
    for item in StreamParser().feed(data):
        if isinstance(item, SIPError) or not hasattr(item, "headers"):
            continue
        try:
            exercise(item)
        except SIPError:
            pass


STREAM = b"".join(parse_datagram(s).to_bytes() for s in SEEDS[:8])


@FUZZ
@given(st.lists(st.integers(0, len(STREAM)), max_size=40))
def test_tcp_splits_give_the_same_messages(cuts):
    whole = StreamParser().feed(STREAM)
    parser = StreamParser()
    got = []
    points = sorted(set(cuts)) + [len(STREAM)]
    start = 0
    for p in points:
        got.extend(parser.feed(STREAM[start:p]))
        start = p
    assert got == whole and len(whole) == 8
