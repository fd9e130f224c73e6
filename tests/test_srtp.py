"""SRTP with SDES keys (issue 16): the a=crypto grammar (RFC 4568 §9),
offer/answer with every suite we take, the TLS-only rule (§8.3), rekeying,
and protect/unprotect through libsrtp, replay and tampering included."""

import base64
import itertools

import numpy as np
import pytest
from twisted.internet.task import Clock

from twisted_mfocus.media import g711, srtp
from twisted_mfocus.media.engine import MediaEngine
from twisted_mfocus.media.packet import build_rtp, parse_rtcp, parse_rtp, sender_report
from twisted_mfocus.media.sdp import (LocalSession, Negotiated, SDPError, SessionDescription,
                                      accept_answer, answer, offer, warning_headers)
from twisted_mfocus.media.srtp import (CryptoError, Keys, Mode, NoSecureOffer, Policy, SrtpContext, SrtpError, choose,
                                       format_crypto, parse_crypto, unusable)

SUITES = [s.name for s in srtp.PREFERENCE]
KEY_SALT = {s.name: s.key_salt for s in srtp.PREFERENCE}


def b64(n, start=0):
    return base64.b64encode(bytes(range(start, start + n))).decode()


def line(tag, suite, extra=""):
    return f"{tag} {suite} inline:{b64(KEY_SALT.get(suite, 30))}{extra}"


def sdp_offer(proto="RTP/SAVP", cryptos=(), formats="0 101", port=4000):
    text = ["v=0", "o=a 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
            f"m=audio {port} {proto} {formats}", "a=rtpmap:101 telephone-event/8000"]
    text += [f"a=crypto:{c}" for c in cryptos]
    return SessionDescription.parse(("\r\n".join(text) + "\r\n").encode())


def counter():
    """Deterministic "random" bytes: each call a new run of counting bytes."""
    seed = itertools.count(1)
    return lambda n: bytes((next(seed) * 7 + i) & 0xFF for i in range(n))


# -- the a=crypto grammar ---------------------------------------------------------

def test_a_full_line_parses():
    c = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_80 inline:{b64(30)}|2^20|1:4 KDR=0 WSH=128")
    assert (c.tag, c.suite, c.key, c.lifetime, c.mki, c.params) == (
        7, "AES_CM_128_HMAC_SHA1_80", bytes(range(30)), 2 ** 20, (1, 4), ("KDR=0", "WSH=128"))
    assert parse_crypto(line(1, "AES_CM_128_HMAC_SHA1_32", "|1048576")).lifetime == 1048576
    assert parse_crypto(f"1 AEAD_AES_128_GCM inline:{b64(28)}").key == bytes(range(28))
    unpadded = b64(28).rstrip("=")          # padding is optional on input
    assert parse_crypto(f"1 AEAD_AES_128_GCM inline:{unpadded}").key == bytes(range(28))
    assert "inline" not in repr(c) and b64(30) not in repr(c)      # keys stay out of logs


@pytest.mark.parametrize("value, why", [
    (None, "without a value"),
    ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag, a suite and a key"),
    ("x AES_CM_128_HMAC_SHA1_80 inline:" + b64(30), "tag 'x' is not 1 to 9 digits"),
    ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30), "is not 1 to 9 digits"),
    ("1 AES-CM inline:" + b64(30), "suite 'AES-CM' is not a suite name"),
    ("1 AES_CM_128_HMAC_SHA1_80 uri:http://x", "key method 'uri' is not inline"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64", "key-salt is not base64"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 89, "key-salt is not base64"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:abcde", "key-salt is not base64"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1|1:1|9", "more than 3 fields"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|2^65", "2^65 is too large"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1:0", "MKI length 0"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1:129", "MKI length 129"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|soon", "'soon' is not understood"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1:4|2^20", "is not understood"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " P" * 9, "more than 8 session"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + ";inline:%%", "key-salt is not base64"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 600, "longer than 512"),
])
def test_bad_lines_say_what_is_wrong(value, why):
    with pytest.raises(CryptoError) as caught:
        parse_crypto(value)
    assert why in str(caught.value)


@pytest.mark.parametrize("value, why", [
    ("1 AES_256_CM_HMAC_SHA1_80 inline:" + b64(46), "suite AES_256_CM_HMAC_SHA1_80 not supp"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(28), "key-salt of 28 bytes, not 30"),
    ("1 AEAD_AES_256_GCM inline:" + b64(30), "key-salt of 30 bytes, not 44"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1:4", "MKI not supported"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + ";inline:" + b64(30), "MKI not supp"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|0", "key lifetime 0"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " KDR=1", "KDR=1 not supported"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " UNENCRYPTED_SRTP", "refused"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " UNAUTHENTICATED_SRTP", "refused"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " FOO=1", "'FOO=1' not understood"),
])
def test_well_formed_lines_we_do_not_take_say_why(value, why):
    assert why in unusable(parse_crypto(value))


def test_hints_and_optional_extensions_are_taken():
    for extra in (" KDR=0", " WSH=64", " FEC_ORDER=FEC_SRTP", " -MY_EXT=1", "|2^31"):
        assert unusable(parse_crypto(line(1, "AES_CM_128_HMAC_SHA1_80", extra))) is None


def test_the_best_acceptable_line_is_chosen():
    offered = [line(1, "AES_CM_128_HMAC_SHA1_32"), line(2, "AES_CM_128_HMAC_SHA1_80"),
               "3 F8_128_HMAC_SHA1_80 inline:" + b64(30), line(4, "AEAD_AES_128_GCM"),
               "garbage"]
    chosen, why = choose(offered)
    assert (chosen.tag, chosen.suite, why) == (4, "AEAD_AES_128_GCM", None)
    assert choose(offered[:2])[0].tag == 2
    chosen, why = choose(["3 F8_128_HMAC_SHA1_80 inline:" + b64(30), "garbage"])
    assert chosen is None and "F8_128_HMAC_SHA1_80 not supported" in why and "tag" in why
    assert choose([]) == (None, "no a=crypto line")
    many = ["garbage"] * srtp.MAX_LINES + [line(1, "AES_CM_128_HMAC_SHA1_80")]
    assert choose(many)[0] is None          # bounded: lines past the limit are not read


def test_format_round_trips():
    for suite in SUITES:
        key = srtp.new_key(suite)
        assert len(key) == KEY_SALT[suite]
        c = parse_crypto(format_crypto(9, suite, key))
        assert (c.tag, c.suite, c.key, unusable(c)) == (9, suite, key, None)


# -- offer/answer -------------------------------------------------------------------

def crypto_lines(sdp):
    return [v for m in sdp.media for k, v in m.attributes if k == "crypto"]


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("proto", ["RTP/SAVP", "RTP/SAVPF"])
def test_an_srtp_offer_over_tls_gets_one_crypto_line_with_a_key_of_ours(suite, proto):
    offered = sdp_offer(proto, [line(5, suite)])
    ours, n = answer(offered, LocalSession("192.0.2.9"), 5000, "TLS", random_bytes=counter())
    (value,) = crypto_lines(ours)
    c = parse_crypto(value)
    assert (c.tag, c.suite) == (5, suite)
    assert c.key != parse_crypto(line(5, suite)).key and len(c.key) == KEY_SALT[suite]
    assert ours.media[0].proto == proto and n.profile == proto
    assert n.keys == Keys(suite, local=c.key, remote=bytes(range(KEY_SALT[suite])), tag=5)
    assert "inline" not in repr(n)


def test_the_best_suite_offered_is_answered():
    offered = sdp_offer("RTP/SAVP", [line(1, "AES_CM_128_HMAC_SHA1_80"),
                                     line(2, "AES_CM_128_HMAC_SHA1_32"),
                                     line(3, "AEAD_AES_256_GCM")])
    ours, n = answer(offered, LocalSession("192.0.2.9"), 5000, "TLS")
    assert [parse_crypto(v).tag for v in crypto_lines(ours)] == [3]
    assert n.keys.suite == "AEAD_AES_256_GCM"


def test_best_effort_srtp_is_answered_with_crypto_over_tls_and_plain_over_udp():
    offered = sdp_offer("RTP/AVP", [line(1, "AES_CM_128_HMAC_SHA1_80")])
    ours, n = answer(offered, LocalSession("192.0.2.9"), 5000, "TLS")
    assert ours.media[0].proto == "RTP/AVP" and len(crypto_lines(ours)) == 1 and n.keys
    for transport in ("UDP", "TCP"):
        ours, n = answer(offered, LocalSession("192.0.2.9"), 5000, transport)
        assert crypto_lines(ours) == [] and n.keys is None and n.codec == "PCMU"
    # Over TLS, a crypto line we cannot take leaves it plain rather than refused.
    ours, n = answer(sdp_offer("RTP/AVP", ["1 F8_128_HMAC_SHA1_80 inline:" + b64(30)]),
                     LocalSession("192.0.2.9"), 5000, "TLS")
    assert crypto_lines(ours) == [] and n.keys is None


def test_a_plain_offer_stays_plain():
    ours, n = answer(sdp_offer("RTP/AVP"), LocalSession("192.0.2.9"), 5000, "TLS")
    assert crypto_lines(ours) == [] and n.keys is None and n.profile == "RTP/AVP"


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_srtp_over_cleartext_is_488_naming_the_transport_unless_allowed(transport):
    offered = sdp_offer("RTP/SAVP", [line(1, "AES_CM_128_HMAC_SHA1_80")])
    with pytest.raises(SDPError) as caught:
        answer(offered, LocalSession("192.0.2.9"), 5000, transport)
    e = caught.value
    assert (e.status, e.reason) == (488, "SDP: SDES keys need TLS")
    assert f"came over {transport}" in e.warning and "RFC 4568" in e.warning
    ours, n = answer(offered, LocalSession("192.0.2.9"), 5000, transport,
                     policy=Policy(sdes_over_cleartext=True))
    assert len(crypto_lines(ours)) == 1 and n.keys.suite == "AES_CM_128_HMAC_SHA1_80"


@pytest.mark.parametrize("offered, reason, warning", [
    (sdp_offer("RTP/SAVP", ["1 F8_128_HMAC_SHA1_80 inline:" + b64(30)]),
     "no acceptable crypto suite", "F8_128_HMAC_SHA1_80 not supported"),
    (sdp_offer("RTP/SAVP", [line(1, "AES_CM_128_HMAC_SHA1_80", "|1:4")]),
     "no acceptable crypto suite", "MKI not supported"),
    (sdp_offer("RTP/SAVP"), "no acceptable crypto suite", "no a=crypto line"),
    (sdp_offer("RTP/SAVP", ["1 x"]), "no acceptable crypto suite", "needs a tag"),
    (sdp_offer("RTP/SAVP", [line(1, "AES_CM_128_HMAC_SHA1_80")], formats="3 18"),
     "no acceptable audio codec", "opus/48000/2, G722/8000, PCMU/8000, PCMA/8000"),
    (sdp_offer("UDP/TLS/RTP/SAVP", [], formats="0"),
     "DTLS-SRTP not supported", "RFC 5764"),
    (sdp_offer("RTP/AVPF", [], formats="0"), "unsupported media profile RTP/AVPF", ""),
])
def test_every_488_names_its_cause(offered, reason, warning):
    with pytest.raises(SDPError) as caught:
        answer(offered, LocalSession("192.0.2.9"), 5000, "TLS")
    assert (caught.value.status, caught.value.reason) == (488, f"SDP: {reason}")
    assert warning in caught.value.warning


def test_the_warning_header():
    e = SDPError("no acceptable crypto suite", 488, 'suite "X\\Y" not supported \u00a7 9')
    assert warning_headers(e, ("127.0.0.1", 5061)) == [
        ("Warning", '399 127.0.0.1:5061 "suite \\"X\\\\Y\\" not supported ? 9"')]
    assert warning_headers(e, ("::1", 5061))[0][1].startswith("399 [::1]:5061 ")
    assert warning_headers(SDPError("first line is not v=0"), ("127.0.0.1", 5060)) == []
    assert warning_headers(ValueError("not an SDPError"), ("127.0.0.1", 5060)) == []


def test_a_reinvite_rekeys():
    local = LocalSession("192.0.2.9")
    offered = sdp_offer("RTP/SAVP", [line(1, "AES_CM_128_HMAC_SHA1_80")])
    first, n1 = answer(offered, local, 5000, "TLS")
    second, n2 = answer(offered, local, 5000, "TLS")
    assert n1.keys.local != n2.keys.local and n1.keys.remote == n2.keys.remote
    assert crypto_lines(first) != crypto_lines(second)
    assert second.origin.sess_version == first.origin.sess_version + 1    # RFC 3264 §8


def test_our_offer_keeps_a_call_encrypted_and_reads_the_answer():
    local = LocalSession("192.0.2.9")
    assert crypto_lines(offer(local, 5000)) == []
    like = Negotiated("PCMU", 0, 101, ("192.0.2.1", 4000), "sendrecv", False,
                      keys=Keys("AES_CM_128_HMAC_SHA1_80", bytes(30), bytes(30)),
                      profile="RTP/SAVP")
    ours = offer(local, 5000, srtp_profile=like.srtp_profile)
    offered = {c.tag: c for c in map(parse_crypto, crypto_lines(ours))}
    assert ours.media[0].proto == "RTP/SAVP" and [c.suite for c in offered.values()] == SUITES
    # The phone answers with tag 3 (AES_CM_128_HMAC_SHA1_80) and a key of its own.
    theirs = sdp_offer("RTP/SAVP", [line(3, "AES_CM_128_HMAC_SHA1_80")], formats="0")
    n = accept_answer(ours, theirs)
    assert n.keys == Keys("AES_CM_128_HMAC_SHA1_80", local=offered[3].key,
                          remote=bytes(range(30)), tag=3)
    assert n.profile == "RTP/SAVP"
    for bad, why in [(sdp_offer("RTP/SAVP", [line(9, "AES_CM_128_HMAC_SHA1_80")], "0"),
                      "does not fit our offer"),
                     (sdp_offer("RTP/SAVP", [line(1, "AES_CM_128_HMAC_SHA1_80")], "0"),
                      "does not fit our offer"),       # tag 1 was AEAD_AES_256_GCM
                     (sdp_offer("RTP/SAVP", [], "0"), "no a=crypto line"),
                     (sdp_offer("RTP/SAVP", ["3 x"], "0"), "bad a=crypto line")]:
        with pytest.raises(SDPError) as caught:
            accept_answer(ours, bad)
        assert why in caught.value.reason
    # A plain offer of ours reads an answer's stray crypto line as nothing.
    plain = offer(local, 5000)
    assert accept_answer(plain, theirs).keys is None


# -- protect / unprotect -------------------------------------------------------------

def pair(suite):
    """Our context and the phone's, with mirrored keys."""
    a, b = srtp.new_key(suite), srtp.new_key(suite)
    return SrtpContext(Keys(suite, local=a, remote=b)), SrtpContext(Keys(suite, local=b, remote=a))


@pytest.mark.parametrize("suite", SUITES)
def test_protect_unprotect_round_trip_rtp_and_rtcp(suite):
    ours, phone = pair(suite)
    payload = bytes(range(160))
    for seq in range(3):
        packet = build_rtp(0, 100 + seq, 160 * seq, 0x1234, payload)
        wire = ours.protect_rtp(packet)
        assert wire[:12] == packet[:12] and payload not in wire   # header clear, payload not
        assert phone.unprotect_rtp(wire) == packet
    report = sender_report(0x1234, 1e9, 480, 3, 480)
    wire = ours.protect_rtcp(report)
    assert wire != report and phone.unprotect_rtcp(wire) == report
    assert len(wire) > len(report) + 4          # RFC 3711 §3.4: E flag + index, tag


@pytest.mark.parametrize("suite", SUITES)
def test_replays_tampering_and_garbage_are_refused_with_a_reason(suite):
    ours, phone = pair(suite)
    wire = phone.protect_rtp(build_rtp(0, 7, 0, 99, bytes(160)))
    assert parse_rtp(ours.unprotect_rtp(wire)).seq == 7
    with pytest.raises(SrtpError) as caught:
        ours.unprotect_rtp(wire)                            # RFC 3711 §3.3.2
    assert caught.value.reason == "replay"
    tampered = bytearray(phone.protect_rtp(build_rtp(0, 8, 160, 99, bytes(160))))
    tampered[30] ^= 1
    with pytest.raises(SrtpError) as caught:
        ours.unprotect_rtp(bytes(tampered))
    assert caught.value.reason == "auth"
    other, _ = pair(suite)                                  # a stranger's key
    with pytest.raises(SrtpError) as caught:
        ours.unprotect_rtp(other.protect_rtp(build_rtp(0, 9, 320, 99, bytes(160))))
    assert caught.value.reason == "auth"
    with pytest.raises(SrtpError) as caught:
        ours.unprotect_rtp(b"\x80\x00")
    assert caught.value.reason == "malformed"
    with pytest.raises(SrtpError) as caught:
        ours.unprotect_rtp(b"\x80" + bytes(1600))           # past libsrtp's buffer
    assert caught.value.reason == "malformed"


def test_a_new_remote_key_keeps_the_old_one_until_the_new_one_works():
    suite = "AES_CM_128_HMAC_SHA1_80"
    a, b1, b2 = (srtp.new_key(suite) for _ in range(3))
    ours = SrtpContext(Keys(suite, local=a, remote=b1))
    old = SrtpContext(Keys(suite, local=b1, remote=a))
    new = SrtpContext(Keys(suite, local=b2, remote=a))
    ours.rekey(Keys(suite, local=a, remote=b2))
    assert parse_rtp(ours.unprotect_rtp(old.protect_rtp(build_rtp(0, 1, 0, 5, b"x")))).seq == 1
    assert parse_rtp(ours.unprotect_rtp(new.protect_rtp(build_rtp(0, 2, 0, 5, b"x")))).seq == 2
    with pytest.raises(SrtpError):          # the new key has worked: the old one is gone
        ours.unprotect_rtp(old.protect_rtp(build_rtp(0, 3, 0, 5, b"x")))


# -- the engine's stream ----------------------------------------------------------------

class Endpoint:
    def __init__(self):
        self.sink, self.rtp, self.rtcp = None, [], []

    def send_rtp(self, packet, dest):
        self.rtp.append((packet, dest))

    def send_rtcp(self, packet, dest):
        self.rtcp.append((packet, dest))


def test_a_stream_unprotects_what_comes_protects_what_goes_and_counts_failures():
    suite = "AEAD_AES_128_GCM"
    a, b = srtp.new_key(suite), srtp.new_key(suite)
    phone = SrtpContext(Keys(suite, local=b, remote=a))
    clock = Clock()
    engine = MediaEngine(clock)
    member, other = Endpoint(), Endpoint()
    n = Negotiated("PCMU", 0, 101, ("127.0.0.1", 4000), "sendrecv", False,
                   keys=Keys(suite, local=a, remote=b), profile="RTP/SAVP")
    engine.add("conf", "member", member, n)
    engine.add("conf", "other", other, Negotiated("PCMU", 0, 101, ("127.0.0.1", 4002),
                                                  "sendrecv", False))
    tone = g711.encode("PCMU", 8000 * np.sin(2 * np.pi * np.arange(160) / 8)).tobytes()
    for seq in range(10):
        wire = phone.protect_rtp(build_rtp(0, seq, 160 * seq, 77, tone))
        member.sink.rtp_received(wire, ("127.0.0.1", 4000))
        if seq == 3:
            member.sink.rtp_received(wire, ("127.0.0.1", 4000))          # a replay
            forged = SrtpContext(Keys(suite, local=b, remote=a)).protect_rtp(
                build_rtp(0, 500, 0, 77, tone))
            member.sink.rtp_received(forged[:-1] + bytes([forged[-1] ^ 1]),
                                     ("127.0.0.1", 4000))                   # tampered
        clock.advance(0.02)
    stream = engine.streams["member"][1]
    assert stream.received == 10 and stream.srtp.suite == suite
    assert (stream.dropped["replay"], stream.dropped["auth"]) == (1, 1)
    assert len(stream.logged) == 2              # once per reason, not per packet
    heard = g711.decode("PCMU", b"".join(parse_rtp(p).payload for p, _ in other.rtp)[-640:])
    spectrum = np.abs(np.fft.rfft(heard.astype(np.float64)))       # heard in clear:
    assert np.argmax(spectrum) * 8000 // 640 == 1000 and heard.std() > 2000    # its 1 kHz
    sent = [p for p, _ in member.rtp]
    assert sent and all(parse_rtp(phone.unprotect_rtp(p)).ssrc == stream.ssrc for p in sent)
    clock.advance(5.0)                          # an SRTCP sender report (RFC 3711 §3.4)
    (report, dest), = member.rtcp
    assert dest == ("127.0.0.1", 4001) and parse_rtcp(phone.unprotect_rtcp(report))
    # A re-INVITE rekeys: our new key protects from then on.
    a2 = srtp.new_key(suite)
    engine.update("member", Negotiated("PCMU", 0, 101, ("127.0.0.1", 4000), "sendrecv",
                                       False, keys=Keys(suite, local=a2, remote=b),
                                       profile="RTP/SAVP"))
    member.rtp.clear()
    clock.advance(0.04)
    rekeyed = SrtpContext(Keys(suite, local=b, remote=a2))
    assert member.rtp and all(rekeyed.unprotect_rtp(p) for p, _ in member.rtp)


# -- the 488 on the wire ------------------------------------------------------------------

def test_a_488_for_media_carries_a_warning_and_a_reinvite_too():
    """Through the focus (focusrig: UDP): an SRTP INVITE is refused, naming
    the transport; a plain call's re-INVITE to SRTP is refused the same
    way and the call goes on."""
    from .focusrig import ROOM, SDP, Phone, join, make_rig
    rig = make_rig()
    savp = SDP.replace(b"RTP/AVP 0", b"RTP/SAVP 0") + \
        f"a=crypto:{line(1, 'AES_CM_128_HMAC_SHA1_80')}\r\n".encode()
    phone = Phone(5080)
    rig.deliver(phone.request("INVITE", ROOM, body=savp), phone.peer)
    (refusal,) = rig.wire.take(488)
    assert refusal.reason == "SDP: SDES keys need TLS"
    warning = refusal.headers.get("warning")
    assert warning.startswith('399 127.0.0.1:5060 "SDES keys need TLS') and "over UDP" in warning
    member = Phone(5090)
    ok = join(rig, member)
    rig.deliver(member.request("INVITE", ROOM, to_tag=ok.to.tag, body=savp), member.peer)
    (refusal,) = rig.wire.take(488)
    assert "over UDP" in refusal.headers.get("warning")
    leg = rig.focus.rooms.get("room").legs[-1]
    assert leg.is_ours and leg.negotiated.keys is None


def test_a_peer_cycling_ssrcs_cannot_grow_the_inbound_context():
    ours, phone = pair("AES_CM_128_HMAC_SHA1_80")
    for ssrc in range(3 * srtp.MAX_SSRCS):
        assert ours.unprotect_rtp(phone.protect_rtp(build_rtp(0, 1, 0, ssrc, b"x")))
    assert len(ours._ssrcs) <= srtp.MAX_SSRCS
    stranger, _ = pair("AES_CM_128_HMAC_SHA1_80")
    kept = set(ours._ssrcs)
    for ssrc in range(1000, 1100):              # forgeries never count
        with pytest.raises(SrtpError):
            ours.unprotect_rtp(stranger.protect_rtp(build_rtp(0, 1, 0, ssrc, b"x")))
    assert ours._ssrcs == kept


# ---- [media] srtp: off | optional | mandatory --------------------------------

PLAIN, BEST_EFFORT = "plain", "best-effort"


def offered_as(kind):
    if kind == PLAIN:
        return sdp_offer("RTP/AVP")
    if kind == BEST_EFFORT:
        return sdp_offer("RTP/AVP", [line(1, "AES_CM_128_HMAC_SHA1_80")])
    return sdp_offer(kind, [line(1, "AES_CM_128_HMAC_SHA1_80")])


@pytest.mark.parametrize("mode, kind, transport, outcome", [
    # off: SRTP profiles refused, best-effort crypto ignored, plain taken
    ("off", "RTP/SAVP", "TLS", "SRTP is off here"),
    ("off", "RTP/SAVPF", "TLS", "SRTP is off here"),
    ("off", BEST_EFFORT, "TLS", None),
    ("off", PLAIN, "UDP", None),
    # optional: what the offer asks, keys only over TLS
    ("optional", "RTP/SAVP", "TLS", "AES_CM_128_HMAC_SHA1_80"),
    ("optional", BEST_EFFORT, "TLS", "AES_CM_128_HMAC_SHA1_80"),
    ("optional", BEST_EFFORT, "UDP", None),
    ("optional", "RTP/SAVP", "UDP", "SDES keys need TLS"),
    ("optional", PLAIN, "TLS", None),
    # mandatory: plain refused, best-effort taken as SRTP, keys still only over TLS
    ("mandatory", PLAIN, "TLS", "SRTP required"),
    ("mandatory", PLAIN, "UDP", "SRTP required"),
    ("mandatory", BEST_EFFORT, "TLS", "AES_CM_128_HMAC_SHA1_80"),
    ("mandatory", BEST_EFFORT, "UDP", "SDES keys need TLS"),
    ("mandatory", "RTP/SAVP", "TLS", "AES_CM_128_HMAC_SHA1_80"),
])
def test_the_srtp_mode_decides_which_offers_are_taken(mode, kind, transport, outcome):
    policy = Policy(Mode(mode))
    if outcome is None or outcome.startswith("AES"):
        ours, n = answer(offered_as(kind), LocalSession("192.0.2.9"), 5000, transport, policy)
        assert (n.keys.suite if n.keys else None) == outcome
        assert len(crypto_lines(ours)) == (1 if outcome else 0)
        assert n.srtp_profile == (n.profile if outcome else None)
        return
    with pytest.raises(SDPError) as caught:
        answer(offered_as(kind), LocalSession("192.0.2.9"), 5000, transport, policy)
    e = caught.value
    assert (e.status, e.reason) == (488, f"SDP: {outcome}")
    assert "[media] srtp" in e.warning or "RFC 4568" in e.warning, e.warning


def test_a_refused_plain_offer_says_why_in_a_warning():
    with pytest.raises(SDPError) as caught:
        answer(sdp_offer("RTP/AVP"), LocalSession("192.0.2.9"), 5000, "TLS",
               Policy(Mode.MANDATORY))
    (name, value), = warning_headers(caught.value, ("192.0.2.9", 5061))
    assert name == "Warning" and value.startswith('399 192.0.2.9:5061 "this focus takes SRTP only')


@pytest.mark.parametrize("mode, transport, known, profile", [
    ("off", "TLS", "RTP/SAVP", None),           # never SRTP
    ("optional", "TLS", None, None),            # a stranger is offered plain RTP
    ("optional", "TLS", "RTP/SAVPF", "RTP/SAVPF"),   # a known SRTP member: its profile
    ("optional", "UDP", "RTP/SAVP", None),      # keys do not travel over UDP
    ("mandatory", "TLS", None, "RTP/SAVP"),
    ("mandatory", "TLS", "RTP/AVP", "RTP/AVP"),
])
def test_what_the_focus_offers_when_it_dials(mode, transport, known, profile):
    assert Policy(Mode(mode)).offer_profile(transport, known) == profile
    made = offer(LocalSession("192.0.2.9"), 5000, srtp_profile=profile)
    assert made.media[0].proto == (profile or "RTP/AVP")
    assert len(crypto_lines(made)) == (len(srtp.PREFERENCE) if profile else 0)


def test_mandatory_srtp_never_offers_keys_in_cleartext():
    with pytest.raises(NoSecureOffer, match="need TLS"):
        Policy(Mode.MANDATORY).offer_profile("UDP", "RTP/SAVP")
    assert Policy(Mode.MANDATORY, sdes_over_cleartext=True).offer_profile("UDP") == "RTP/SAVP"
