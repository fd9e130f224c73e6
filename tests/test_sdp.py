"""SDP parsing and RFC 3264 offer/answer (twisted_mfocus.media.sdp), sans-IO."""

import random
import subprocess
import sys

import pytest

from twisted_mfocus.media.sdp import (
    MAX_MEDIA, LocalSession, SDPError, SessionDescription, accept_answer, answer, offer)


def sdp(*lines, end="\r\n"):
    return "".join(line + end for line in lines).encode()


def audio_offer(formats, *attrs, c="IN IP4 192.0.2.10", port=4000, session_attrs=()):
    return SessionDescription.parse(sdp(
        "v=0", "o=alice 1 1 IN IP4 192.0.2.10", "s=-", f"c={c}", "t=0 0",
        *(f"a={a}" for a in session_attrs),
        f"m=audio {port} RTP/AVP {formats}", *(f"a={a}" for a in attrs)))


# A baresip 3.x offer: G722 and opus first, G.711 after, DTMF at 101.
BARESIP = sdp(
    "v=0",
    "o=- 1719412345 1719412345 IN IP4 192.168.1.10",
    "s=-",
    "c=IN IP4 192.168.1.10",
    "t=0 0",
    "m=audio 10258 RTP/AVP 9 96 0 8 101",
    "b=AS:128",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=ssrc:2874592871 cname:2d3a0e1f-6f80-4f33-9a7a-3cf3a5d6b1a9",
    "a=rtcp-rsize",
    "a=ptime:20")

# A linphone offer: LF-only, no rtpmap for 0 and 8, three telephone-events
# at different clock rates, and a video stream.
LINPHONE = sdp(
    "v=0",
    "o=bob 3030 1818 IN IP4 192.168.0.23",
    "s=Talk",
    "c=IN IP4 192.168.0.23",
    "t=0 0",
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics",
    "m=audio 7078 RTP/AVP 96 97 98 0 8 101 99 100",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:97 speex/16000",
    "a=fmtp:97 vbr=on",
    "a=rtpmap:98 speex/8000",
    "a=fmtp:98 vbr=on",
    "a=rtpmap:101 telephone-event/48000",
    "a=rtpmap:99 telephone-event/16000",
    "a=rtpmap:100 telephone-event/8000",
    "a=rtcp-fb:* trr-int 1000",
    "m=video 9078 RTP/AVP 96",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:* trr-int 1000",
    "", "", end="\n")


def local():
    return LocalSession("198.51.100.1", sess_id=777)


# -- parsing and serializing -------------------------------------------------

def test_round_trip_is_byte_exact_for_crlf_input():
    assert SessionDescription.parse(BARESIP).to_bytes() == BARESIP


def test_lf_only_and_trailing_blank_lines_are_accepted():
    parsed = SessionDescription.parse(LINPHONE)
    assert [m.media for m in parsed.media] == ["audio", "video"]
    assert parsed.session_name == "Talk"
    out = parsed.to_bytes()
    assert out == LINPHONE.replace(b"\n", b"\r\n").rstrip(b"\r\n") + b"\r\n"
    again = SessionDescription.parse(out)
    assert again.to_bytes() == out


def test_fields():
    parsed = SessionDescription.parse(BARESIP)
    assert parsed.origin == ("-", "1719412345", 1719412345, "IN", "IP4", "192.168.1.10")
    assert parsed.origin.sess_version == 1719412345
    assert parsed.connection == "192.168.1.10"
    audio = parsed.media[0]
    assert (audio.media, audio.port, audio.proto) == ("audio", 10258, "RTP/AVP")
    assert audio.formats == ["9", "96", "0", "8", "101"]
    assert audio.connection is None
    assert audio.attributes[0] == ("rtpmap", "9 G722/8000")
    assert ("rtcp-rsize", None) in audio.attributes
    assert audio.rtpmap["96"] == ("OPUS", 48000, 2)
    assert audio.rtpmap["101"] == ("TELEPHONE-EVENT", 8000, 1)
    assert audio.fmtp["101"] == "0-15"
    assert audio.direction == "sendrecv"


def test_static_payload_types_without_rtpmap():
    audio = SessionDescription.parse(LINPHONE).media[0]
    assert audio.rtpmap["0"] == ("PCMU", 8000, 1)
    assert audio.rtpmap["8"] == ("PCMA", 8000, 1)


def test_ipv6():
    parsed = audio_offer("0", c="IN IP6 ::1")
    assert parsed.connection == "::1"
    assert b"c=IN IP6 ::1\r\n" in parsed.to_bytes()
    _, negotiated = answer(parsed, LocalSession("2001:db8::1"), 5000)
    assert negotiated.remote == ("::1", 4000)
    ours, _ = answer(parsed, LocalSession("2001:db8::1", sess_id=5), 5000)
    assert b"o=mfocus 5 1 IN IP6 2001:db8::1\r\n" in ours.to_bytes()
    assert b"c=IN IP6 2001:db8::1\r\n" in ours.to_bytes()


def test_media_level_connection_wins():
    parsed = SessionDescription.parse(sdp(
        "v=0", "o=a 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
        "m=audio 4000 RTP/AVP 0", "c=IN IP4 192.0.2.99"))
    assert parsed.media[0].connection == "192.0.2.99"
    assert answer(parsed, local(), 5000)[1].remote == ("192.0.2.99", 4000)


@pytest.mark.parametrize("data, reason", [
    (b"", "first line is not v=0"),
    (sdp("o=a 1 1 IN IP4 192.0.2.1", "s=-", "m=audio 1 RTP/AVP 0"), "not v=0"),
    (sdp("v=1", "o=a 1 1 IN IP4 192.0.2.1"), "not v=0"),
    (sdp("v=0", "s=-", "c=IN IP4 192.0.2.1", "m=audio 1 RTP/AVP 0"), "no o= line"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1"), "no m= line"),
    (sdp("v=0", "o=a x 1 IN IP4 192.0.2.1", "m=audio 1 RTP/AVP 0"), "bad o= line"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1",
         "m=audio 12x RTP/AVP 0"), "bad m= port '12x'"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1",
         "m=audio 70000 RTP/AVP 0"), "bad m= port"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1",
         "m=audio 4000 RTP/AVP"), "m= line without formats"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1", "hello world",
         "m=audio 4000 RTP/AVP 0"), "line 4 is not <letter>=<value>"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "", "c=IN IP4 192.0.2.1",
         "m=audio 4000 RTP/AVP 0"), "line 3 is not"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "x=1", "c=IN IP4 192.0.2.1",
         "m=audio 4000 RTP/AVP 0"), "x= line not allowed"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1",
         "m=audio 4000 RTP/AVP 0", "t=0 0"), "t= line not allowed in a media"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0"),
     "no c= line for the audio stream"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 300.1.1.1",
         "m=audio 4000 RTP/AVP 0"), "bad address '300.1.1.1'"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 ::1",
         "m=audio 4000 RTP/AVP 0"), "address '::1' is not IP4"),
    (sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=ATM NSAP 47.0005",
         "m=audio 4000 RTP/AVP 0"), "bad c= line"),
    (b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=\0\r\n", "NUL byte"),
])
def test_malformed(data, reason):
    with pytest.raises(SDPError) as caught:
        SessionDescription.parse(data)
    assert caught.value.reason.startswith("SDP: ")
    assert reason in caught.value.reason


def test_reason_is_short_and_one_line():
    body = sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1",
               "m=audio " + "9\x01" * 3000 + " RTP/AVP 0")
    with pytest.raises(SDPError) as caught:
        SessionDescription.parse(body)
    assert len(caught.value.reason) < 80
    assert all(ch.isprintable() for ch in caught.value.reason)


def test_too_many_m_lines():
    lines = ["v=0", "o=a 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    ok = lines + [f"m=audio {4000 + 2 * i} RTP/AVP 0" for i in range(MAX_MEDIA)]
    assert len(SessionDescription.parse(sdp(*ok)).media) == MAX_MEDIA
    with pytest.raises(SDPError, match="more than 16 m= lines"):
        SessionDescription.parse(sdp(*ok, "m=audio 9000 RTP/AVP 0"))


def test_oversized():
    body = sdp("v=0", "o=a 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1",
               "t=0 0", "m=audio 4000 RTP/AVP 0", "a=x:" + "y" * 16400)
    with pytest.raises(SDPError, match="larger than 16384 bytes"):
        SessionDescription.parse(body)


# -- answering ----------------------------------------------------------------

def test_answer_baresip():
    ours, negotiated = answer(SessionDescription.parse(BARESIP), local(), 40000)
    assert negotiated.codec == "OPUS" and negotiated.payload_type == 96     # wideband first
    assert negotiated.media_codec.clock == 48000
    assert negotiated.telephone_event == 101        # offered at 8000 only: taken anyway
    assert negotiated.remote == ("192.168.1.10", 10258)
    assert negotiated.direction == "sendrecv" and not negotiated.on_hold
    assert ours.to_bytes() == sdp(
        "v=0", "o=mfocus 777 1 IN IP4 198.51.100.1", "s=mfocus",
        "c=IN IP4 198.51.100.1", "t=0 0", "m=audio 40000 RTP/AVP 96 101",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 maxplaybackrate=16000;sprop-maxcapturerate=16000;stereo=0;"
        "useinbandfec=1;usedtx=1",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=ptime:20", "a=sendrecv")
    full, _ = answer(SessionDescription.parse(BARESIP), local(), 40000, mix_rate=48000)
    assert b"a=fmtp:96 maxplaybackrate=48000;sprop-maxcapturerate=48000;" in full.to_bytes()
    narrow, n = answer(SessionDescription.parse(BARESIP), local(), 40000,
                       codecs=("PCMU", "PCMA"))
    assert (n.codec, n.payload_type) == ("PCMU", 0) and b"a=rtpmap:0 PCMU/8000" in \
        narrow.to_bytes()


def test_answer_linphone_rejects_video_and_picks_the_codecs_telephone_event():
    ours, negotiated = answer(SessionDescription.parse(LINPHONE), local(), 40000)
    assert (negotiated.codec, negotiated.payload_type) == ("OPUS", 96)
    assert negotiated.telephone_event == 101        # the one at 48000, Opus's clock
    audio, video = ours.media
    assert (audio.port, audio.formats) == (40000, ["96", "101"])
    assert audio.fmtp["101"] == "0-15"
    _, narrow = answer(SessionDescription.parse(LINPHONE), local(), 40000,
                       codecs=("PCMU",))
    assert (narrow.codec, narrow.telephone_event) == ("PCMU", 100)     # the 8000 one
    assert (video.media, video.port, video.proto) == ("video", 0, "RTP/AVP")
    assert video.formats == ["96"]
    # what we send parses back
    assert len(SessionDescription.parse(ours.to_bytes()).media) == 2


@pytest.mark.parametrize("formats, codec, pt", [
    ("0", "PCMU", 0), ("8", "PCMA", 8), ("0 8", "PCMU", 0), ("8 0", "PCMU", 0),
    ("18 8", "PCMA", 8), ("8 0 9", "G722", 9),
])
def test_codec_choice_follows_our_preference(formats, codec, pt):
    ours, negotiated = answer(audio_offer(formats), local(), 5000)
    assert (negotiated.codec, negotiated.payload_type) == (codec, pt)
    assert negotiated.telephone_event is None
    assert ours.media[0].formats == [str(pt)]
    assert ("ptime", "20") in ours.media[0].attributes


def test_dynamic_payload_type_for_g711():
    offered = audio_offer("97", "rtpmap:97 pcma/8000")
    assert answer(offered, local(), 5000)[1].payload_type == 97


def test_telephone_event_keeps_payload_type_and_offered_fmtp():
    offered = audio_offer("8 96", "rtpmap:96 telephone-event/8000", "fmtp:96 0-16")
    ours, negotiated = answer(offered, local(), 5000)
    assert negotiated.telephone_event == 96
    assert ours.media[0].formats == ["8", "96"]
    assert ("fmtp", "96 0-16") in ours.media[0].attributes


def test_video_first_then_audio():
    offered = SessionDescription.parse(sdp(
        "v=0", "o=a 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
        "m=video 6000 RTP/AVP 96", "a=rtpmap:96 H264/90000",
        "m=audio 4000 RTP/AVP 0", "m=audio 4002 RTP/AVP 8"))
    ours, negotiated = answer(offered, local(), 5000)
    assert [(m.media, m.port) for m in ours.media] == [
        ("video", 0), ("audio", 5000), ("audio", 0)]
    assert negotiated.remote == ("192.0.2.1", 4000)


@pytest.mark.parametrize("offered", [
    audio_offer("3 18", "rtpmap:3 GSM/8000"),
    audio_offer("96", "rtpmap:96 PCMU/16000"),
    audio_offer("0", port=0),
    SessionDescription.parse(sdp(
        "v=0", "o=a 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
        "m=video 6000 RTP/AVP 0")),
])
def test_no_acceptable_codec(offered):
    with pytest.raises(SDPError) as caught:
        answer(offered, local(), 5000)
    assert caught.value.reason == "SDP: no acceptable audio codec"


@pytest.mark.parametrize("attrs, session_attrs, c, ours, on_hold, remote", [
    (["sendonly"], [], "IN IP4 192.0.2.10", "recvonly", True, ("192.0.2.10", 4000)),
    (["inactive"], [], "IN IP4 192.0.2.10", "inactive", True, ("192.0.2.10", 4000)),
    (["recvonly"], [], "IN IP4 192.0.2.10", "sendonly", False, ("192.0.2.10", 4000)),
    (["sendrecv"], [], "IN IP4 192.0.2.10", "sendrecv", False, ("192.0.2.10", 4000)),
    ([], ["sendonly"], "IN IP4 192.0.2.10", "recvonly", True, ("192.0.2.10", 4000)),
    (["sendrecv"], ["sendonly"], "IN IP4 192.0.2.10", "sendrecv", False,
     ("192.0.2.10", 4000)),
    ([], [], "IN IP4 0.0.0.0", "recvonly", True, None),
    (["sendonly"], [], "IN IP4 0.0.0.0", "recvonly", True, None),
    (["recvonly"], [], "IN IP4 0.0.0.0", "inactive", True, None),
])
def test_hold(attrs, session_attrs, c, ours, on_hold, remote):
    offered = audio_offer("0", *attrs, c=c, session_attrs=session_attrs)
    sent, negotiated = answer(offered, local(), 5000)
    assert negotiated.direction == ours
    assert sent.media[0].direction == ours
    assert (ours, None) in sent.media[0].attributes
    assert negotiated.on_hold is on_hold
    assert negotiated.remote == remote


def test_origin_version_increments_only_when_changed():
    session = LocalSession("198.51.100.1", sess_id=9)
    first, _ = answer(audio_offer("0"), session, 5000)
    same, _ = answer(audio_offer("0"), session, 5000)
    held, _ = answer(audio_offer("0", "sendonly"), session, 5000)
    resumed, _ = answer(audio_offer("0"), session, 5000)
    versions = [s.origin.sess_version for s in (first, same, held, resumed)]
    assert versions == [1, 1, 2, 3]
    assert {s.origin.sess_id for s in (first, same, held, resumed)} == {"9"}
    assert b"o=mfocus 9 3 IN IP4 198.51.100.1\r\n" in resumed.to_bytes()


def test_random_session_ids_differ():
    assert LocalSession("192.0.2.1").sess_id != LocalSession("192.0.2.1").sess_id
    assert LocalSession("192.0.2.1").sess_id.isdigit()


# -- offering and reading the answer --------------------------------------------

def test_offer():
    made = offer(local(), 6000)
    assert made.to_bytes() == sdp(
        "v=0", "o=mfocus 777 1 IN IP4 198.51.100.1", "s=mfocus",
        "c=IN IP4 198.51.100.1", "t=0 0", "m=audio 6000 RTP/AVP 96 9 0 8 102 101",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 maxplaybackrate=16000;sprop-maxcapturerate=16000;stereo=0;"
        "useinbandfec=1;usedtx=1",
        "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:102 telephone-event/48000", "a=fmtp:102 0-15",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=ptime:20",
        "a=sendrecv")
    assert offer(local(), 6000, codecs=("PCMA",)).media[0].formats == ["8", "101"]
    assert offer(local(), 6000, "sendonly").media[0].direction == "sendonly"
    with pytest.raises(ValueError):
        offer(local(), 6000, "sideways")


def reply(*media_lines, c="IN IP4 203.0.113.5"):
    return SessionDescription.parse(sdp(
        "v=0", "o=carol 5 5 IN IP4 203.0.113.5", "s=-", f"c={c}", "t=0 0",
        *media_lines))


def test_accept_answer():
    made = offer(local(), 6000)
    got = accept_answer(made, reply("m=audio 7000 RTP/AVP 8 100",
                                    "a=rtpmap:100 telephone-event/8000"))
    assert (got.codec, got.payload_type, got.telephone_event) == ("PCMA", 8, 100)
    assert got.remote == ("203.0.113.5", 7000)
    assert got.direction == "sendrecv" and not got.on_hold
    # our own answer to our own offer fits
    ours, _ = answer(made, LocalSession("192.0.2.7"), 8000)
    assert accept_answer(made, ours).codec == "OPUS"


@pytest.mark.parametrize("ours, theirs, mine, on_hold, remote", [
    ("sendrecv", "sendonly", "recvonly", True, ("203.0.113.5", 7000)),
    ("sendrecv", "inactive", "inactive", True, ("203.0.113.5", 7000)),
    ("sendrecv", "recvonly", "sendonly", False, ("203.0.113.5", 7000)),
    ("sendonly", "recvonly", "sendonly", False, ("203.0.113.5", 7000)),
    ("sendonly", "sendrecv", "sendonly", False, ("203.0.113.5", 7000)),
])
def test_accept_answer_directions(ours, theirs, mine, on_hold, remote):
    got = accept_answer(offer(local(), 6000, ours),
                        reply("m=audio 7000 RTP/AVP 0", f"a={theirs}"))
    assert (got.direction, got.on_hold, got.remote) == (mine, on_hold, remote)


def test_accept_answer_with_zero_address():
    got = accept_answer(offer(local(), 6000), reply("m=audio 7000 RTP/AVP 0",
                                                    c="IN IP4 0.0.0.0"))
    assert (got.remote, got.on_hold, got.direction) == (None, True, "recvonly")


def test_accept_answer_rejecting_audio():
    got = accept_answer(offer(local(), 6000), reply("m=audio 0 RTP/AVP 0"))
    assert got.remote is None and got.codec is None


@pytest.mark.parametrize("lines, reason", [
    (["m=audio 7000 RTP/AVP 0", "m=video 0 RTP/AVP 96"],
     "answer has 2 m= lines, the offer had 1"),
    (["m=video 7000 RTP/AVP 96"], "answer has m=video where the offer had m=audio"),
    (["m=audio 7000 RTP/AVP 3", "a=rtpmap:3 GSM/8000"],
     "answer has no codec from the offer"),
])
def test_answer_that_does_not_fit(lines, reason):
    with pytest.raises(SDPError) as caught:
        accept_answer(offer(local(), 6000), reply(*lines))
    assert caught.value.reason == "SDP: " + reason


# -- robustness ---------------------------------------------------------------

def test_mutated_input_raises_only_sdperror():
    rng = random.Random(4566)
    for _ in range(2000):
        data = bytearray(rng.choice([BARESIP, LINPHONE]))
        for _ in range(rng.randrange(1, 6)):
            at = rng.randrange(len(data))
            op = rng.randrange(3)
            if op == 0:
                data[at] = rng.randrange(256)
            elif op == 1:
                del data[at:at + rng.randrange(1, 20)]
            else:
                data[at:at] = rng.choice([b"\r\n", b"\n", b" ", b"=", b":", b"/", b"0"])
        try:
            parsed = SessionDescription.parse(bytes(data))
        except SDPError:
            continue
        assert SessionDescription.parse(parsed.to_bytes()).to_bytes() == parsed.to_bytes()
        try:
            answer(parsed, local(), 5000)
        except SDPError:
            pass


def test_sdp_module_is_sans_io():
    code = ("import sys, twisted_mfocus.media.sdp; "
            "print([m for m in sys.modules if m.split('.')[0] == 'twisted'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
