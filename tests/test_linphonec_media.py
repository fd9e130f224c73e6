"""linphonec (liblinphone 5.1) as a conference member, judged by ear: with
mandatory SRTP over TLS next to a plain baresip, and muting itself with
``*6`` sent as SIP INFO next to two baresips.

Each phone sends a tone of its own; what a phone heard is its recording
(linphonec's ``record`` file, baresip sndfile's ``-dec.wav``), read by FFT
band levels.  The foci take RTP ranges 32000-32099 and 32100-32199: no
other test's (foci.py stays below 32000, test_focus_sipp counts up from
31000), and below the kernel's ephemeral ports, where the phones' come
from."""

import re
import time
import wave

import numpy as np

from .harness import wait_for
from .pcap import Capture, udp_datagrams
from .peers import Linphonec, dial_all, free_port, tone_phone, write_tone_wav
from .peers.process import need
from .onefocus import Server, tones_heard
from .peers.linphonec import linphone_messages
from .sipclient import header
from .tones import band_levels

CAROL, BOB, DAVE = 440, 1000, 1500      # linphonec's tone, the baresips' tones
RATE = 8000


def linphone(tmp_path, name, freq, **options):
    """A linphonec in ``tmp_path/name`` whose microphone plays a ``freq`` Hz
    tone; what it hears goes to ``heard.wav`` (``.heard``)."""
    work = tmp_path / name
    work.mkdir()
    phone = Linphonec(work, name, free_port(), **options)
    phone.tone = write_tone_wav(work / "tone.wav", freq=freq, seconds=90)
    phone.heard = str(work / "heard.wav")
    return phone


def join(phone, uri, timeout=10):
    """``phone`` (started linphonec) plays its tone, records, and calls
    ``uri``; fails at once when the call errs instead of connecting."""
    phone.use_files(play=phone.tone, record=phone.heard)
    phone.call(uri)
    state = phone.wait_output(r"Call \d+ with .* (connected|error|ended)", timeout).group(1)
    assert state == "connected", (state, phone.output()[-5:])


def samples(path):
    """A recording (16-bit mono) at 8 kHz, what band_levels reads.  baresip
    writes PCMU's 8 kHz; linphonec records at its codec's rate (48 kHz
    with Opus), averaged here over blocks: a low-pass that keeps the tones,
    all far below 4 kHz."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        assert (w.getnchannels(), w.getsampwidth(), rate % RATE) == (1, 2, 0), (path, rate)
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    n = rate // RATE
    return audio[:len(audio) // n * n].reshape(-1, n).mean(axis=1)


def tones_in(audio, freqs):
    """The tones in ``audio`` (> 0.2 of the strongest), the others clearly
    absent (< 0.01): tones_heard's rule, for any stretch of a recording."""
    assert len(audio) >= RATE * 1.5, len(audio)
    levels = band_levels(audio, freqs)
    loud = {f for f, level in levels.items() if level > 0.2}
    assert all(levels[f] < 0.01 for f in freqs if f not in loud), levels
    return loud


def stretch(audio, start, seconds=2.0):
    """``seconds`` of a recording from ``start`` s into it."""
    part = audio[int(start * RATE):int((start + seconds) * RATE)]
    assert start >= 0 and len(part) == int(seconds * RATE), (start, len(audio) / RATE)
    return part


def audio_sdp(message):
    """The m=audio line's profile and formats, the encodings of a=rtpmap by
    payload type, and the a=crypto suites of a SIP message's SDP (as
    liblinphone logged it)."""
    body = message.partition("\n\n")[2]
    m = re.search(r"^m=audio \d+ (\S+) ([\d ]+)$", body, re.M)
    assert m, message
    rtpmap = dict(re.findall(r"^a=rtpmap:(\d+) ([^/]+)/", body, re.M))
    return m.group(1), m.group(2).split(), rtpmap, re.findall(r"^a=crypto:\d+ (\S+) ", body, re.M)


def invite_exchange(phone):
    """linphonec's INVITE, where it went (``TLS://host:port``...), and the
    200 it got to it (from its debug log)."""
    messages = linphone_messages(phone.log())
    peer, invite = next((p, m) for out, p, m in messages if out and m.startswith("INVITE "))
    ok = next(m for out, _, m in messages if not out and m.startswith("SIP/2.0 200")
              and header(m, "CSeq").endswith(" INVITE"))
    return invite, peer, ok


def info_exchange(phone):
    """The INFO requests linphonec sent, and the CSeqs of the 200s it got
    to INFOs (from its debug log)."""
    messages = linphone_messages(phone.log())
    sent = [m for out, _, m in messages if out and m.startswith("INFO ")]
    ok = [header(m, "CSeq") for out, _, m in messages if not out
          and m.startswith("SIP/2.0 200") and header(m, "CSeq").endswith(" INFO")]
    return sent, ok


def test_linphonec_with_mandatory_srtp_over_tls_joins_and_hears(tmp_path):
    """liblinphone's SDES over TLS, offered RTP/SAVP only, is taken: its
    audio and a plain member's meet in one mix, each decrypted or not as
    its own call needs.  With its default codecs it joins on Opus."""
    need("linphonec", "baresip")
    focus = Server(tmp_path, "32000-32099", tls=True)
    # The leaf names 127.0.0.1 in an IP address SAN, which mbedtls 2.28
    # does not match: the chain is verified against the test CA, the name
    # is not (verify_server_cn=0).
    carol = linphone(tmp_path, "carol", CAROL, tls_port=free_port(), root_ca=focus.certs["ca"],
                     verify_cn=False, media_encryption="srtp", encryption_mandatory=True,
                     default_codecs=True)
    bob = tone_phone(tmp_path, "bob", BOB, record=True)
    try:
        carol.start()
        join(carol, focus.uri("tls"))
        dial_all([bob], focus.uri())
        assert wait_for(lambda: len(focus.members()) == 2, timeout=10), focus.members()
        time.sleep(5)                   # seconds of the two-way mix (tones_heard takes 3)
        members = focus.members()
    finally:
        carol.stop()
        bob.stop()
        focus.stop()
    c, b = members[carol.aor], members[bob.aor]
    assert c["endpoint"].endswith(";transport=tls"), c
    assert b["rtp"]["srtp"] is None and b["rtp"]["received"] > 150, b
    assert c["rtp"]["received"] > 150, c
    assert c["rtp"]["codec"] == "opus/48000/2", c     # its default codecs: Opus (issue 17)
    assert c["rtp"]["dropped"]["auth"] == c["rtp"]["dropped"]["replay"] == 0, c
    # What each heard: the other's tone, not its own.
    assert tones_in(samples(carol.heard)[-RATE * 2:], (CAROL, BOB)) == {BOB}
    assert tones_heard(bob, (CAROL, BOB)) == {CAROL}
    # linphonec's side: SIP went over TLS (verified handshake), the offer was
    # RTP/SAVP with SDES keys, and the suite answered is the one the API shows.
    log = carol.log()
    assert "SSL handshake finished" in log
    invite, peer, ok = invite_exchange(carol)
    assert peer.upper() == f"TLS://127.0.0.1:{focus.tls}", peer
    assert header(invite, "Via").startswith("SIP/2.0/TLS "), invite
    profile, _, _, offered = audio_sdp(invite)
    assert profile == "RTP/SAVP" and offered, invite
    profile, _, _, answered = audio_sdp(ok)
    assert profile == "RTP/SAVP" and answered == [c["rtp"]["srtp"]], ok
    assert c["rtp"]["srtp"] in offered, (c["rtp"]["srtp"], offered)
    assert "Negotiated media encryption is LinphoneMediaEncryptionSRTP" in log


def test_linphonec_with_use_info_mutes_itself_with_star_6(tmp_path):
    """``*6`` as SIP INFO (no RFC 2833 events from this phone) mutes its
    sender: its tone leaves the others' audio while they still hear each
    other.  The keys are pressed one by one, the 6 once the *'s INFO is
    answered: about 1 s apart (see Linphonec.send_dtmf), well within the
    focus's 3 s window."""
    need("linphonec", "baresip", "dumpcap")
    focus = Server(tmp_path, "32100-32199")
    carol = linphone(tmp_path, "carol", CAROL, dtmf_info=True)
    bob = tone_phone(tmp_path, "bob", BOB, record=True)
    dave = tone_phone(tmp_path, "dave", DAVE, record=True)
    capture, dialed = None, {}

    def media():
        return {uri: m["media"] for uri, m in focus.members().items()}
    try:
        capture = Capture(str(tmp_path / "carol-rtp.pcap"),
                          bpf=f"udp and src host 127.0.0.1 and src port {carol.rtp_port}")
        carol.start()
        join(carol, focus.uri())
        for phone in (bob, dave):
            dialed[phone] = time.monotonic()
            dial_all([phone], focus.uri())
        assert wait_for(lambda: list(media().values()) == ["sendrecv"] * 3, timeout=10), media()
        time.sleep(3.5)                 # seconds of the three-way mix
        pressed = time.monotonic()
        carol.send_dtmf("*")
        assert wait_for(lambda: len(info_exchange(carol)[1]) == 1, timeout=8), info_exchange(carol)
        carol.send_dtmf("6")
        assert wait_for(lambda: media().get(carol.aor) == "sendonly", timeout=8), media()
        muted = time.monotonic()
        assert media() == {carol.aor: "sendonly", bob.aor: "sendrecv", dave.aor: "sendrecv"}
        time.sleep(5)                   # seconds of the mix without carol
    finally:
        for phone in (carol, bob, dave):
            phone.stop()
        if capture is not None:
            capture.stop()
        focus.stop()
    tones = (CAROL, BOB, DAVE)
    for phone, other in ((bob, DAVE), (dave, BOB)):
        # Before: sndfile writes a packet's samples as it decodes it, so
        # sample i came in no sooner than i / 8000 s after the dial (a busy
        # machine's stall loses samples, never adds any): the 2 s ending 1 s
        # before the press are in the three-way mix, and before the mute
        # (1 s after the press at the soonest) unless 2 s of audio went
        # missing first.  After: the last 2 s, heard from 5 s after the
        # mute showed on.
        (path,) = phone.recordings()["dec"]
        before = tones_in(stretch(samples(path), pressed - dialed[phone] - 3), tones)
        after = tones_heard(phone, tones)
        assert (before, after) == ({CAROL, other}, {other}), (phone.name, muted - pressed)
    assert tones_in(samples(carol.heard)[-RATE * 2:], tones) == {BOB, DAVE}  # hears on
    # The keys went as INFO dtmf-relay, each answered 200; no RTP event.
    infos, answered = info_exchange(carol)
    assert [header(m, "Content-Type") for m in infos] == ["application/dtmf-relay"] * 2, infos
    assert [re.search(r"^Signal=(\S+)", m, re.M).group(1) for m in infos] == ["*", "6"], infos
    assert sorted(answered) == sorted(header(m, "CSeq") for m in infos), answered
    invite, _, ok = invite_exchange(carol)
    assert "telephone-event" not in audio_sdp(invite)[2].values(), invite  # use_rfc2833=0
    _, formats, rtpmap, _ = audio_sdp(ok)
    codec = next(pt for pt in formats if rtpmap.get(pt) != "telephone-event")
    types = {d[1] & 0x7F for _, _, _, d in udp_datagrams(capture.path)
             if len(d) > 12 and d[0] >> 6 == 2}
    assert types == {int(codec)}, (types, formats, rtpmap)     # never a telephone-event
