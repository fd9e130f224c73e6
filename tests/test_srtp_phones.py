"""SRTP and strict latching with real phones (issue 16): baresip with
``mediaenc srtp-mand`` over TLS in a conference with a plain PCMU baresip,
each hearing the other (judged from what each phone decoded: sndfile's
``-dec.wav``) while the wire carries no decodable tone; srtp-mand over UDP
refused with 488 and a Warning, then taken with ``sdes_over_cleartext``;
and an injector on a member's focus port heard by nobody.

Each focus gets an RTP range of its own (30400-30999: below the kernel's
ephemeral ports, where the phones' ports come from, and away from
20000-29999, where benchmarks may run)."""

import re
import socket
import time

import numpy as np

from .harness import api_get, wait_for
from .onefocus import ALICE, BOB, INJECTED, ROOM, Server, tones_heard
from .pcap import Capture, sip_messages, udp_datagrams
from .peers import tone_phone
from .peers.process import need
from .sipclient import header



def tonality(payloads, freq):
    """The share of the energy within 25 Hz of ``freq`` when ``payloads``
    are read as PCMU: near 1 for a tone, near 0.01 for noise (ciphertext)."""
    from twisted_mfocus.media import g711
    audio = g711.decode("PCMU", b"".join(payloads)).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    bins = np.fft.rfftfreq(len(audio), 1 / 8000)
    return float(spectrum[np.abs(bins - freq) < 25].sum() / spectrum.sum())


def rtp_payloads(pcap, port, outgoing):
    """The RTP payloads (as on the wire) to ``port``, or from it."""
    out = []
    for _, sport, dport, data in udp_datagrams(pcap):
        if (sport if outgoing else dport) == port and len(data) > 12 and data[0] >> 6 == 2 \
                and data[1] & 0x7F == 0:
            out.append(data[12:])
    return out


def answer_port(pcap, phone):
    """The focus's RTP port in its 200 to ``phone``'s INVITE (UDP SIP)."""
    for _, _, dport, message in sip_messages(pcap):
        text = message.decode("utf-8", "replace")
        if text.startswith("SIP/2.0 200") and "INVITE" in (header(text, "CSeq") or "") \
                and phone.aor in (header(text, "From") or ""):
            return int(re.search(r"^m=audio (\d+) ", text, re.M).group(1))
    raise AssertionError(f"no 200 to {phone.name}'s INVITE in the capture")


def test_an_srtp_member_over_tls_and_a_plain_member_hear_each_other(tmp_path):
    need("baresip", "dumpcap")
    focus = Server(tmp_path, "30400-30499", tls=True)
    alice = tone_phone(tmp_path, "alice", ALICE, mediaenc="srtp-mand",
                       cafile=focus.certs["ca"], record=True)
    bob = tone_phone(tmp_path, "bob", BOB, record=True)
    capture = Capture(str(tmp_path / "rtp.pcap"), bpf=(
        f"udp and (portrange {alice.rtp_low}-{alice.rtp_high} or "
        f"portrange {bob.rtp_low}-{bob.rtp_high})"))
    try:
        alice.start()
        alice.dial(focus.uri("tls"))
        alice.wait_event("CALL_ESTABLISHED", 8)
        bob.start()
        bob.dial(focus.uri())
        bob.wait_event("CALL_ESTABLISHED", 8)
        assert wait_for(lambda: len(focus.members()) == 2, timeout=10)
        time.sleep(4)                   # seconds of the two-way mix
        members = focus.members()
    finally:
        capture.stop()
        for phone in (alice, bob):
            phone.stop()
        focus.stop()
    a, b = members[alice.aor]["rtp"], members[bob.aor]["rtp"]
    assert a["srtp"] in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32",
                         "AEAD_AES_128_GCM", "AEAD_AES_256_GCM"), a
    assert b["srtp"] is None and a["received"] > 150 and b["received"] > 150
    # baresip's first RTCP (an APP packet at the start) may go out before its
    # SRTCP is set up: plain, so dropped as malformed; nothing else is dropped.
    assert {k: v for k, v in a["dropped"].items() if k != "malformed"} == {
        "source": 0, "auth": 0, "replay": 0} and a["dropped"]["malformed"] <= 2, a
    # What each phone decoded: the other's tone, not its own.
    assert tones_heard(alice) == {BOB}
    assert tones_heard(bob) == {ALICE}
    # The wire: alice's RTP both ways is ciphertext (no tone when read as
    # G.711); bob's plain RTP, read the same way, shows alice's tone.
    sent_by_alice = rtp_payloads(capture.path, alice.rtp_low, outgoing=True)
    sent_to_alice = rtp_payloads(capture.path, alice.rtp_low, outgoing=False)
    sent_to_bob = rtp_payloads(capture.path, bob.rtp_low, outgoing=False)
    assert len(sent_by_alice) > 150 and len(sent_to_alice) > 150 and len(sent_to_bob) > 150
    assert tonality(sent_by_alice[-100:], ALICE) < 0.05
    assert tonality(sent_to_alice[-100:], BOB) < 0.05
    assert tonality(sent_to_bob[-100:], ALICE) > 0.5            # the method works
    assert {len(p) for p in sent_to_alice} != {160}             # 160 + the auth tag


def test_srtp_over_udp_is_488_with_a_warning_then_taken_with_sdes_over_cleartext(tmp_path):
    need("baresip", "dumpcap")
    strict = Server(tmp_path, "30500-30599")
    labs = Server(tmp_path, "30600-30699", "[media]\nsdes_over_cleartext = yes\n")
    alice = tone_phone(tmp_path, "alice", ALICE, mediaenc="srtp-mand")
    capture = Capture(str(tmp_path / "sip.pcap"), ports=[strict.port])
    try:
        alice.start()
        closed = refused_call(alice, strict.uri())
        capture.stop()
        alice.dial(labs.uri())
        alice.wait_event("CALL_ESTABLISHED", 8)
        assert wait_for(lambda: (labs.members().get(alice.aor) or {}).get("rtp", {})
                        .get("received", 0) > 50, timeout=5)
        member = labs.members()[alice.aor]
    finally:
        capture.stop()
        alice.stop()
        strict.stop()
        labs.stop()
    assert "488" in closed.get("param", ""), closed
    responses = [m.decode("utf-8", "replace") for _, sport, _, m in sip_messages(capture.path)
                 if sport == strict.port and m.startswith(b"SIP/2.0 488")]
    assert responses, "no 488 on the wire"
    status_line = responses[0].split("\r\n", 1)[0]
    assert status_line == "SIP/2.0 488 SDP: SDES keys need TLS", status_line
    warning = header(responses[0], "Warning")
    assert warning.startswith(f'399 127.0.0.1:{strict.port} "SDES keys need TLS'), warning
    assert "over UDP" in warning, warning
    assert member["rtp"]["srtp"] is not None and member["rtp"]["dropped"]["auth"] == 0


def refused_call(phone, uri):
    """``phone`` dials ``uri`` and the call is refused: its CALL_CLOSED event
    (a moment more for the capture to take the answer)."""
    phone.dial(uri)
    closed = phone.wait_event("CALL_CLOSED", 8)
    time.sleep(0.3)
    return closed


def refusals(pcap, focus):
    """The 488s ``focus`` sent (UDP), as text."""
    return [m.decode("utf-8", "replace") for _, sport, _, m in sip_messages(pcap)
            if sport == focus.port and m.startswith(b"SIP/2.0 488")]


def test_srtp_mandatory_refuses_a_plain_phone_and_off_refuses_an_srtp_one(tmp_path):
    """``[media] srtp = mandatory``: a plain PCMU phone gets 488 with a
    Warning naming the setting and leaves nothing behind (no member, no
    conference), while an srtp-mand phone over TLS joins.  ``srtp = off``:
    the srtp-mand phone gets 488 saying SRTP is off, the plain one joins."""
    need("baresip", "dumpcap")
    mandatory = Server(tmp_path, "30800-30899", "[media]\nsrtp = mandatory\n", tls=True)
    off = Server(tmp_path, "30900-30999", "[media]\nsrtp = off\n")
    alice = tone_phone(tmp_path, "alice", ALICE, mediaenc="srtp-mand",
                       cafile=mandatory.certs["ca"])
    bob = tone_phone(tmp_path, "bob", BOB)
    capture = Capture(str(tmp_path / "sip.pcap"), ports=[mandatory.port, off.port])
    try:
        for phone in (alice, bob):
            phone.start()
        bob_refused = refused_call(bob, mandatory.uri())
        status, _ = api_get(mandatory.http, f"/api/v1/conferences/{ROOM}")
        alice_refused = refused_call(alice, off.uri())
        alice.dial(mandatory.uri("tls"))
        alice.wait_event("CALL_ESTABLISHED", 8)
        bob.dial(off.uri())
        bob.wait_event("CALL_ESTABLISHED", 8)
        assert wait_for(lambda: alice.aor in mandatory.members() and bob.aor in off.members(),
                        timeout=10)
        joined = mandatory.members()[alice.aor]["rtp"], off.members()[bob.aor]["rtp"]
        time.sleep(0.3)
    finally:
        capture.stop()
        for phone in (alice, bob):
            phone.stop()
        mandatory.stop()
        off.stop()
    assert "488" in bob_refused.get("param", "") and "488" in alice_refused.get("param", "")
    assert status == 404                # the refused call made no conference
    (plain,) = refusals(capture.path, mandatory)
    assert plain.split("\r\n", 1)[0] == "SIP/2.0 488 SDP: SRTP required", plain
    warning = header(plain, "Warning")
    assert warning.startswith(f'399 127.0.0.1:{mandatory.port} "this focus takes SRTP only '
                              f'([media] srtp = mandatory)'), warning
    (secure,) = refusals(capture.path, off)
    assert secure.split("\r\n", 1)[0] == "SIP/2.0 488 SDP: SRTP is off here", secure
    assert "[media] srtp = off" in header(secure, "Warning"), secure
    assert joined[0]["srtp"] is not None and joined[1]["srtp"] is None, joined


def test_a_dtls_srtp_phone_is_told_what_to_offer_instead(tmp_path):
    """DTLS-SRTP (RFC 5764) is not built: baresip with ``dtls_srtp`` gets
    a 488 that says so, with a Warning naming what would be taken."""
    need("baresip", "dumpcap")
    focus = Server(tmp_path, "31200-31299")
    alice = tone_phone(tmp_path, "alice", ALICE, mediaenc="dtls_srtp")
    capture = Capture(str(tmp_path / "sip.pcap"), ports=[focus.port])
    try:
        alice.start()
        closed = refused_call(alice, focus.uri())
    finally:
        capture.stop()
        alice.stop()
        focus.stop()
    assert "488 SDP: DTLS-SRTP not supported" in closed.get("param", ""), closed
    (refusal,) = refusals(capture.path, focus)
    assert "RFC 5764" in header(refusal, "Warning") and "a=crypto" in header(refusal, "Warning")


def test_an_injector_on_a_members_port_is_heard_by_nobody_and_gets_nothing(tmp_path):
    need("baresip", "dumpcap")
    focus = Server(tmp_path, "30700-30799")
    alice = tone_phone(tmp_path, "alice", ALICE, record=True)
    bob = tone_phone(tmp_path, "bob", BOB, record=True)
    capture = Capture(str(tmp_path / "sip.pcap"), ports=[focus.port])
    injector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    injector.bind(("127.0.0.1", 0))
    injector.setblocking(False)
    sent = received = 0
    try:
        for phone in (alice, bob):
            phone.start()
            phone.dial(focus.uri())
            phone.wait_event("CALL_ESTABLISHED", 8)
        assert wait_for(lambda: len(focus.members()) == 2, timeout=10)
        time.sleep(1)                   # alice's source is learned by now
        target = ("127.0.0.1", answer_port(capture.path, alice))
        from twisted_mfocus.media import g711
        from twisted_mfocus.media.packet import build_rtp
        t = np.arange(160) / 8000
        payload = g711.encode("PCMU", (12000 * np.sin(2 * np.pi * INJECTED * t))
                              .astype(np.int16)).tobytes()
        start = time.monotonic()
        while time.monotonic() - start < 5:     # the best case for a hijacker: steady
            injector.sendto(build_rtp(0, sent, 160 * sent, 0xBADBAD, payload), target)
            sent += 1
            try:
                while True:
                    received += len(injector.recv(2048))
            except BlockingIOError:
                pass
            time.sleep(0.02)
        time.sleep(1)
        try:
            received += len(injector.recv(2048))
        except BlockingIOError:
            pass
        members = focus.members()
    finally:
        injector.close()
        capture.stop()
        for phone in (alice, bob):
            phone.stop()
        focus.stop()
    assert received == 0
    rtp = members[alice.aor]["rtp"]
    assert rtp["dropped"]["source"] >= sent * 0.95 and rtp["latch"] == "locked", (sent, rtp)
    assert rtp["source"] == f"127.0.0.1:{alice.rtp_low}"        # still alice's own
    assert members[bob.aor]["rtp"]["dropped"]["source"] == 0
    assert tones_heard(alice) == {BOB}
    assert tones_heard(bob) == {ALICE}
