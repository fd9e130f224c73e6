"""SRTP across foci (issue 16): two baresip phones with ``mediaenc
srtp-mand`` over TLS on two foci hear each other.

The primary holds one member; the second phone is accepted beyond its
capacity and handed to the secondary.  The secondary's INVITE with
Replaces must offer SRTP again (the forwarded REFER's marker says the call
was RTP/SAVP; ``[media] srtp`` is only ``optional``, so nothing else would
make it) and reach the phone over TLS, at the phone's own TLS listener.
The cascade between the foci goes over TLS too (each focus advertises its
TLS listener in its focus record) and carries SRTP: a capture of the
RTP between the foci' ports holds no tone.  When the secondary is killed,
the primary takes bob over with SRTP again (the profile is in bob's
replicated record).  What each phone heard is judged from what it decoded
(sndfile's ``-dec.wav``)."""

import struct
import time

import numpy as np

from .certs import make_ca_and_leaf
from .foci import Node, stop_all, wait_agreement
from .harness import free_port, wait_for
from .pcap import Capture, udp_datagrams
from .peers import tone_phone
from .peers.process import need
from .tones import band_levels

ROOM = "secure"
ALICE, BOB = 440, 1000
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32",
          "AEAD_AES_128_GCM", "AEAD_AES_256_GCM")


def last_decoded(phone, seconds=2):
    """The last ``seconds`` of what ``phone`` decoded in its latest call."""
    path = max(phone.recordings()["dec"])       # dump-<time>-dec.wav: the newest call
    with open(path, "rb") as f:     # read raw: a file still written has no sizes yet
        data = f.read()
    fmt = data.index(b"fmt ")
    channels, rate = struct.unpack_from("<HI", data, fmt + 10)
    assert channels == 1, (path, channels)
    start = data.index(b"data", fmt) + 8
    samples = np.frombuffer(data[start:len(data) - (len(data) - start) % 2], dtype="<i2")
    assert len(samples) >= rate * (seconds + 1), (phone.name, path, len(samples))
    return samples[-rate * seconds:]


def heard(phone):
    levels = band_levels(last_decoded(phone), (ALICE, BOB))
    return {f for f, level in levels.items() if level > 0.2}, levels


def tonality(payloads, freq):
    """Share of the energy within 25 Hz of ``freq`` when ``payloads`` are
    read as PCMU: near 1 for a tone, about 0.01 for ciphertext."""
    from twisted_mfocus.media import g711
    audio = g711.decode("PCMU", b"".join(payloads)).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    bins = np.fft.rfftfreq(len(audio), 1 / 8000)
    return float(spectrum[np.abs(bins - freq) < 25].sum() / spectrum.sum())


def between(pcap, a, b):
    """RTP payloads (on the wire) sent from focus ``a``'s RTP ports to ``b``'s."""
    (alow, ahigh), (blow, bhigh) = a.rtp_range, b.rtp_range
    return [data[12:] for _, sport, dport, data in udp_datagrams(pcap)
            if alow <= sport <= ahigh and blow <= dport <= bhigh and len(data) > 12
            and data[0] >> 6 == 2]


def test_two_srtp_members_on_two_foci_hear_each_other_over_an_srtp_cascade(tmp_path):
    need("baresip", "dumpcap")
    certs = make_ca_and_leaf(tmp_path, leaves=[("phone", "localhost", "127.0.0.1")])
    phone_pem = tmp_path / "phone.pem"
    phone_pem.write_text(open(certs["phone-cert"]).read() + open(certs["phone-key"]).read())
    config = (f"[tls]\ncertificate = {certs['cert']}\nkey = {certs['key']}\n"
              f"ca = {certs['ca']}\n[media]\nsrtp = optional\n"
              f"codecs = PCMU\n")         # a G.711 cascade: its wire is readable if plain
    primary = Node("primary", "primary", 1, tmp_path, config)
    secondary = Node("s1", "secondary", 2, tmp_path, config)
    primary.peers, secondary.peers = [secondary.uri], [primary.uri]
    for node in (primary, secondary):
        node.tls = free_port()
        node.extra_listen.append(f"tls:127.0.0.1:{node.tls}")
    phones = [tone_phone(tmp_path, name, freq, rtp_span=4, mediaenc="srtp-mand",
                         cafile=certs["ca"], certificate=str(phone_pem), record=True)
              for name, freq in (("alice", ALICE), ("bob", BOB))]
    alice, bob = phones
    capture = None
    try:
        for node in (primary, secondary):
            node.start()
        capture = Capture(str(tmp_path / "rtp.pcap"), bpf=(
            f"udp and portrange {min(primary.rtp_range[0], secondary.rtp_range[0])}-"
            f"{max(primary.rtp_range[1], secondary.rtp_range[1])}"))
        uri = f"sip:{ROOM}@127.0.0.1:{primary.tls};transport=tls"
        for phone in phones:
            phone.start()
            phone.dial(uri)
            phone.wait_event("CALL_ESTABLISHED", 10)
        # bob is taken over by the secondary: a second call, established over TLS
        bob.wait_event("CALL_ESTABLISHED", 15)
        view, _ = wait_agreement([primary, secondary], ROOM, lambda v: v and sorted(
            (m[0], m[2]) for m in v[0]) == sorted(
            [(alice.aor, primary.uri), (bob.aor, secondary.uri)]), timeout=20)
        assert view is not None, (primary.conference(ROOM), secondary.conference(ROOM))
        assert wait_for(lambda: primary.conference(ROOM)["cascades"] == [secondary.uri],
                        timeout=10), primary.conference(ROOM)
        time.sleep(4)                       # seconds of audio across the cascade
        members = {}
        for node in (primary, secondary):
            for m in node.conference(ROOM)["members"]:
                if m.get("rtp"):
                    members[m["uri"]] = m["rtp"]
        heard_before = heard(alice), heard(bob)
        # The secondary dies: the primary takes bob over, SRTP again (the
        # profile is in bob's replicated record), over TLS to bob.
        secondary.process.proc.kill()
        def taken():
            view = primary.conference(ROOM) or {"members": []}
            return any(m["uri"] == bob.aor and (m.get("rtp") or {}).get("srtp") in SUITES
                       and (m.get("rtp") or {}).get("received", 0) > 50
                       for m in view["members"])
        assert wait_for(taken, timeout=20), primary.conference(ROOM)
        time.sleep(3)
    finally:
        if capture is not None:
            capture.stop()
        for phone in phones:
            phone.stop()
        stop_all([primary, secondary])
    # Each member's call is SRTP at the focus that holds it.
    assert members[alice.aor]["srtp"] in SUITES, members
    assert members[bob.aor]["srtp"] in SUITES, members
    assert members[bob.aor]["received"] > 100, members
    # What each phone decoded: the other's tone, across the two foci, and
    # again (in bob's new call) once the primary took bob over.
    assert heard_before[0][0] == {BOB}, heard_before
    assert heard_before[1][0] == {ALICE}, heard_before
    assert heard(alice)[0] == {BOB}, heard(alice)
    assert heard(bob)[0] == {ALICE}, heard(bob)
    # The cascade is SRTP: both foci say so, and its payloads read as noise.
    for node in (primary, secondary):
        line = next(l for l in node.process.log().splitlines() if "cascade with" in l)
        assert any(f"(PCMU, {suite})" in line for suite in SUITES), line
    one, other = between(capture.path, primary, secondary), between(
        capture.path, secondary, primary)
    assert len(one) > 100 and len(other) > 100, (len(one), len(other))
    assert tonality(one, ALICE) < 0.05 and tonality(other, BOB) < 0.05, (
        tonality(one, ALICE), tonality(other, BOB))
