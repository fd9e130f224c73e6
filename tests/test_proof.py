"""Focus-to-focus request proofs (HMAC-SHA256 under a deployment secret)."""

import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet import task

from twisted_mfocus.sip.message import parse_datagram
from twisted_mfocus.sip.proof import HEADER, Proof, ProofError, Prover, load_secret, new_secret
from twisted_mfocus.sip.uri import URI

SECRET = b"s" * 32
NOW = 1_700_000_000
BODY = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"


def request_bytes(method="INVITE", ruri="sip:room@focus-b.example.com", call_id="a84b4c76e667",
                  cseq="314159 INVITE", from_tag=";tag=1928301774", to_tag=";tag=a6c85cf",
                  body=BODY, extra=()):
    lines = [f"{method} {ruri} SIP/2.0",
             "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
             "Max-Forwards: 70",
             f"From: <sip:focus-a@focus-a.example.com>{from_tag}",
             f"To: <sip:room@focus-b.example.com>{to_tag}",
             f"Call-ID: {call_id}",
             f"CSeq: {cseq}",
             "Contact: <sip:focus-a@192.0.2.1:5060>",
             *extra,
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(**kw):
    return parse_datagram(request_bytes(**kw))


def make_clock(at=NOW):
    clock = task.Clock()
    clock.advance(at)
    return clock


def prover(clock=None, secret=SECRET, **kw):
    return Prover(secret, clock or make_clock(), **kw)


def signed(p=None, **kw):
    """A request signed by ``p`` and read back from the wire."""
    req = request(**kw)
    (p or prover()).sign(req)
    return parse_datagram(req.to_bytes())


# -- sign and check --------------------------------------------------------------

def test_valid_once_then_replayed():
    clock = make_clock()
    p = prover(clock)
    req = signed(p)
    first = p.check(req)
    assert first.outcome is Proof.VALID and first.ok
    second = p.check(req)
    assert second.outcome is Proof.REPLAYED and not second.ok


def test_header_format():
    req = request()
    value = prover().sign(req)
    assert req.headers.lines(HEADER) == [value]
    v, ts, nonce, mac = value.split(";")
    assert v == "v=1" and ts == f"ts={NOW}"
    assert nonce.startswith("nonce=") and len(nonce) == 6 + 16
    assert mac.startswith("mac=") and len(mac) == 4 + 43


def test_sign_replaces_an_existing_proof():
    p = prover()
    req = request(extra=[f"{HEADER}: v=1;ts=0;nonce=0000000000000000;mac=" + "A" * 43])
    p.sign(req)
    p.sign(req)
    assert req.headers.count(HEADER) == 1
    assert p.check(parse_datagram(req.to_bytes())).outcome is Proof.VALID


def test_each_proof_is_fresh():
    p = prover()
    a, b = signed(p), signed(p)
    assert a.headers.get(HEADER) != b.headers.get(HEADER)
    assert p.check(a).ok and p.check(b).ok


def test_sign_a_request_with_a_uri_object():
    p = prover()
    req = request()
    req.uri = URI.parse("sip:room@focus-b.example.com;transport=udp")
    p.sign(req)
    assert p.check(parse_datagram(req.to_bytes())).ok


def test_other_secret_is_invalid():
    req = signed(prover())
    verdict = prover(secret=b"t" * 32).check(req)
    assert verdict.outcome is Proof.INVALID and verdict.reason == "mac"


def test_missing():
    verdict = prover().check(request())
    assert verdict.outcome is Proof.MISSING


def test_two_headers_are_invalid():
    p = prover()
    req = signed(p)
    value = req.headers.get(HEADER)
    req.headers.add(HEADER, value)
    assert p.check(req).outcome is Proof.INVALID
    # ... even when only one is good, and the good one is not spent by it.
    req.headers.set(HEADER, value)
    req.headers.add(HEADER, "v=1")
    assert p.check(req).outcome is Proof.INVALID
    req.headers.set(HEADER, value)
    assert p.check(req).ok


@pytest.mark.parametrize("field, old, new", [
    ("method", b"INVITE sip:", b"OPTIONS sip:"),
    ("request-uri", b"sip:room@focus-b.example.com SIP", b"sip:room@focus-c.example.com SIP"),
    ("request-uri text", b"sip:room@focus-b.example.com SIP", b"sip:room@FOCUS-B.example.com SIP"),
    ("call-id", b"Call-ID: a84b4c76e667", b"Call-ID: a84b4c76e668"),
    ("cseq number", b"CSeq: 314159 INVITE", b"CSeq: 314160 INVITE"),
    ("cseq method", b"CSeq: 314159 INVITE", b"CSeq: 314159 UPDATE"),
    ("from tag", b";tag=1928301774", b";tag=1928301775"),
    ("to tag", b";tag=a6c85cf", b";tag=a6c85cg"),
    ("to tag removed", b"example.com>;tag=a6c85cf", b"example.com>"),
    ("body", b"s=-\r\n", b"s=+\r\n"),
])
def test_changing_a_covered_field_is_invalid(field, old, new):
    p = prover()
    data = signed(p).to_bytes()
    assert data.count(old) == 1, field
    verdict = p.check(parse_datagram(data.replace(old, new)))
    assert verdict.outcome is Proof.INVALID and verdict.reason == "mac", field
    assert p.check(parse_datagram(data)).ok        # the genuine one was not spent


def test_adding_a_to_tag_or_a_body_is_invalid():
    p = prover()
    out_of_dialog = signed(p, to_tag="")
    moved = request()
    moved.headers.add(HEADER, out_of_dialog.headers.get(HEADER))
    assert p.check(moved).outcome is Proof.INVALID
    longer = signed(p)
    longer.body += b"a=sendonly\r\n"
    assert p.check(longer).outcome is Proof.INVALID


def test_uncovered_headers_may_change():
    p = prover()
    data = signed(p).to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: 69")
    assert p.check(parse_datagram(data)).ok


@pytest.mark.parametrize("age", [31, -31])
def test_expired(age):
    req = signed(prover(make_clock(NOW - age)))
    verdict = prover(make_clock(NOW)).check(req)
    assert verdict.outcome is Proof.EXPIRED


@pytest.mark.parametrize("age", [30, -30])
def test_within_skew(age):
    req = signed(prover(make_clock(NOW - age)))
    assert prover(make_clock(NOW)).check(req).ok


def test_expired_is_only_said_of_a_genuine_proof():
    req = signed(prover(make_clock(NOW - 3600)))
    assert prover(make_clock(NOW), secret=b"t" * 32).check(req).outcome is Proof.INVALID


def test_replay_memory_is_pruned_by_age():
    clock = make_clock()
    p = prover(clock)
    for _ in range(5):
        assert p.check(signed(p)).ok
    assert p.remembered == 5
    clock.advance(31)
    assert p.check(signed(p)).ok
    assert p.remembered == 1


def test_evicted_proof_cannot_be_replayed():
    clock = make_clock()
    p = prover(clock, max_seen=2)
    old = signed(p)
    clock.advance(1)
    mid = signed(p)
    clock.advance(1)
    new = signed(p)
    assert p.check(old).ok and p.check(mid).ok and p.check(new).ok
    assert p.remembered == 2
    assert p.check(old).outcome is Proof.EXPIRED       # evicted: refused by age
    assert p.check(mid).outcome is Proof.REPLAYED
    assert p.check(signed(p)).ok                         # newer ones still pass


def test_short_replay_window_narrows_acceptance():
    clock = make_clock()
    p = prover(clock, replay_window=5)
    req = signed(p)
    clock.advance(6)
    assert p.check(req).outcome is Proof.EXPIRED


def test_bad_requests_are_invalid_not_errors():
    p = prover()
    value = signed(p).headers.get(HEADER)
    for kw in ({"cseq": "abc INVITE"}, {"cseq": "1"}):
        req = request(**kw, extra=[f"{HEADER}: {value}"])
        assert p.check(req).outcome is Proof.INVALID
    req = request(extra=[f"{HEADER}: {value}", "Call-ID: second"])
    assert p.check(req).outcome is Proof.INVALID
    req = request(extra=[f"{HEADER}: {value}"])
    req.headers.remove("from")
    assert p.check(req).outcome is Proof.INVALID
    with pytest.raises(ProofError):
        p.sign(req)


def test_short_secret_refused():
    with pytest.raises(ProofError):
        Prover(b"short", task.Clock())


# -- hypothesis -------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.data())
def test_single_character_mutation_is_never_valid(data):
    p = prover()
    req = request()
    value = p.sign(req)
    op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    i = data.draw(st.integers(0, len(value) - (op != "insert")))
    if op == "delete":
        mutated = value[:i] + value[i + 1:]
    else:
        c = data.draw(st.characters().filter(lambda c: op == "insert" or c != value[i]))
        mutated = value[:i] + c + value[i + (op == "replace"):]
    assert mutated != value
    req.headers.set(HEADER, mutated)
    assert p.check(req).outcome is not Proof.VALID


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=1, max_size=3))
def test_arbitrary_header_text_never_raises(values):
    req = request()
    for v in values:
        req.headers.add(HEADER, v)
    assert prover().check(req).outcome is Proof.INVALID


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_arbitrary_header_octets_never_raise(raw):
    data = request_bytes().replace(b"Max-Forwards: 70",
                                   b"Max-Forwards: 70\r\n" + HEADER.encode() + b": " + raw)
    assert prover().check(parse_datagram(data)).outcome is Proof.INVALID


# -- the secret -------------------------------------------------------------------

def test_load_secret(tmp_path):
    path = tmp_path / "secret"
    secret = new_secret()
    assert len(secret) >= 32
    path.write_text(f"  {secret}\n")
    assert load_secret(path) == secret.encode()
    assert prover(secret=load_secret(path)).check(signed(prover(secret=secret))).ok


@pytest.mark.parametrize("text", ["", "x" * 31, "   \n"])
def test_load_secret_too_short(tmp_path, text):
    path = tmp_path / "secret"
    path.write_text(text)
    with pytest.raises(ProofError, match=str(path)):
        load_secret(path)


def test_load_secret_unreadable(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(ProofError, match=str(path)):
        load_secret(path)
    (tmp_path / "binary").write_bytes(b"\xff" * 40)
    with pytest.raises(ProofError, match="binary"):
        load_secret(tmp_path / "binary")


def test_main_prints_a_new_secret():
    out = subprocess.run([sys.executable, "-m", "twisted_mfocus.sip.proof"],
                         capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1]).stdout
    assert len(out.strip()) >= 32 and out.strip() != new_secret()
