"""Wideband conferences (issue 17): baresip phones on Opus, G.722 and PCMU
in one conference, each sending its own tone, judged by what each phone
decoded (sndfile's ``-dec.wav``, at its decoder's rate).

The focus mixes at 16 kHz: the 5 and 6 kHz tones of the wideband phones
reach the other wideband phones; the PCMU phone hears what 8 kHz carries
and no alias of the high tones (a 6 kHz tone folded at 8 kHz would be 2
kHz, a 5 kHz one 3 kHz); nobody hears itself."""

import re
import socket
import time
import wave
from collections import Counter

import numpy as np
import pytest

from .harness import Focus, api_get, free_port, wait_for, write_config
from .peers import tone_phone
from .peers.process import need

ROOM = "wide"
#: name -> (codecs it offers, its microphone's rate, its tone)
PHONES = {"olga": ("opus", 48000, 6000), "otto": ("opus", 48000, 700),
          "gina": ("G722", 16000, 5000), "paul": ("PCMU", 8000, 1000)}
ALIASES = (2000, 3000)


def decoded(phone, seconds=2):
    """The last ``seconds`` of what ``phone`` decoded, and its rate."""
    (path,) = phone.recordings()["dec"]
    with wave.open(path) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = samples.reshape(-1, channels)[:, 0]
    assert len(samples) >= rate * (seconds + 1), (phone.name, len(samples))
    return samples[-rate * seconds:], rate


def levels(samples, rate, freqs, width=30):
    """Each band's energy relative to the whole signal's."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    total = spectrum.sum() or 1.0
    return {f: float(spectrum[np.abs(bins - f) < width].sum() / total) for f in freqs}


@pytest.mark.parametrize("mix_rate", [16000, 48000])
def test_opus_g722_and_pcmu_phones_hear_each_other_in_the_band_each_can_carry(
        tmp_path, mix_rate):
    need("baresip")
    workdir = tmp_path / "focus"
    workdir.mkdir()
    port, http = free_port(), free_port()
    config = write_config(workdir, f"[media]\nspeakers = 0\nmix_rate = {mix_rate}\n")
    focus = Focus(["--listen", f"udp:127.0.0.1:{port}", "--rtp-ports", "31400-31499",
                   "--http", f"tcp:{http}:interface=127.0.0.1", "--config", config], workdir)
    focus.wait_ready(port)
    phones = {name: tone_phone(tmp_path, name, freq, codecs=codecs, srate=rate, record=True)
              for name, (codecs, rate, freq) in PHONES.items()}
    try:
        for phone in phones.values():
            phone.start()
            phone.dial(f"sip:{ROOM}@127.0.0.1:{port}")
            phone.wait_event("CALL_ESTABLISHED", 8)

        def members():
            status, body = api_get(http, f"/api/v1/conferences/{ROOM}")
            return {m["uri"].split("@")[0][4:]: m for m in body["members"]} if status == 200 \
                else {}
        assert wait_for(lambda: len(members()) == 4, timeout=10)
        time.sleep(5)                       # seconds of the four-way mix
        codecs = {name: m["rtp"]["codec"] for name, m in members().items()}
    finally:
        for phone in phones.values():
            phone.stop()
        focus.stop()
    assert codecs == {"olga": "opus/48000/2", "otto": "opus/48000/2",
                      "gina": "G722/8000", "paul": "PCMU/8000"}, codecs
    tones = {name: freq for name, (_, _, freq) in PHONES.items()}
    heard = {}
    for name, phone in phones.items():
        samples, rate = decoded(phone)
        heard[name] = levels(samples, rate, sorted(set(tones.values()) | set(ALIASES)))
    for name in ("olga", "otto", "gina"):       # wideband: every other tone, not its own
        others = [f for n, f in tones.items() if n != name]
        assert all(heard[name][f] > 0.05 for f in others), (name, heard[name])
        assert heard[name][tones[name]] < 0.001, (name, heard[name])
    paul = heard["paul"]                        # narrowband: 700 Hz, nothing folded
    assert paul[700] > 0.5, paul
    assert all(paul[f] < 0.001 for f in (1000, 5000, 6000) + ALIASES), paul


OPUS_OFFER = (b"v=0\r\no=s 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              b"m=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
              b"a=fmtp:111 useinbandfec=1\r\n")


def gaps(samples, rate, tone):
    """Longest run of 20 ms windows in which ``tone`` is missing (its band
    below a tenth of its median level), between the first and the last
    window it is in (the sender's start and end); and that span."""
    window = rate // 50
    t = np.arange(window) / rate
    probe = np.exp(-2j * np.pi * tone * t)
    level = np.array([abs(np.dot(samples[i:i + window], probe))
                      for i in range(0, len(samples) - window, window)])
    heard = level > 0.1 * np.median(level[level > 0]) if level.any() else level
    start, end = int(np.argmax(heard)), len(heard) - int(np.argmax(heard[::-1]))
    runs, run = [], 0
    for present in heard[start:end]:
        run = 0 if present else run + 1
        runs.append(run)
    return max(runs, default=0), end - start


@pytest.mark.slow
def test_opus_with_loss_and_reordering_is_heard_without_gaps(tmp_path):
    """A scripted Opus sender (in-band FEC, 10 % of packets lost one at a
    time, 5 % swapped with the next) into a conference; a baresip on Opus
    hears its 1 kHz tone without a gap longer than one 20 ms frame."""
    need("baresip")
    import random

    from twisted_mfocus.media.codecs import CODECS, Transcoder
    from twisted_mfocus.media.packet import build_rtp

    from . import sipclient
    workdir = tmp_path / "focus"
    workdir.mkdir()
    port, http = free_port(), free_port()
    focus = Focus(["--listen", f"udp:127.0.0.1:{port}", "--rtp-ports", "31500-31599",
                   "--http", f"tcp:{http}:interface=127.0.0.1"], workdir)
    focus.wait_ready(port)
    listener = tone_phone(tmp_path, "lena", 300, codecs="opus", srate=48000, record=True)
    sender, media = sipclient.UDP(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    rng = random.Random(17)
    lost = swapped = 0
    try:
        listener.start()
        listener.dial(f"sip:{ROOM}@127.0.0.1:{port}")
        listener.wait_event("CALL_ESTABLISHED", 8)
        ruri = f"sip:{ROOM}@127.0.0.1:{port}"
        status, ok = sender.ask(sipclient.request(
            "INVITE", ruri, sender.port, body=OPUS_OFFER % media.getsockname()[1],
            call_id="lossy", from_tag="l1"), port)
        assert status == 200 and "opus/48000" in ok, ok
        to_tag = re.search(r"^To:.*;tag=([^;\s]+)", ok, re.M).group(1)
        focus_rtp = int(re.search(r"^m=audio (\d+) ", ok, re.M).group(1))
        sender.send(sipclient.request("ACK", ruri, sender.port, call_id="lossy",
                                      from_tag="l1", to_tag=to_tag), port)
        coder = Transcoder(CODECS["OPUS"])
        t = np.arange(16000 * 8) / 16000
        frames = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16).reshape(-1, 320)
        packets = [build_rtp(111, n, 960 * n, 0x5EED, coder.encode(f))
                   for n, f in enumerate(frames)]
        order, n = [], 0
        while n < len(packets):
            if rng.random() < 0.05 and n + 1 < len(packets):
                order += [n + 1, n]             # reordered
                swapped += 1
                n += 2
            else:
                order.append(n)
                n += 1
        start = time.monotonic()
        for i, n in enumerate(order):
            if rng.random() < 0.10 and 0 < n < len(packets) - 1:
                lost += 1                       # lost (never two in a row: FEC's case)
                continue
            time.sleep(max(0.0, start + 0.02 * i - time.monotonic()))
            media.sendto(packets[n], ("127.0.0.1", focus_rtp))
        time.sleep(0.5)
        status, body = api_get(http, f"/api/v1/conferences/{ROOM}")
        member = next(m for m in body["members"] if "tester" in m["uri"])
    finally:
        media.close()
        sender.close()
        listener.stop()
        focus.stop()
    samples, rate = decoded(listener, seconds=6)
    longest, windows = gaps(samples, rate, 1000)
    assert windows > 250 and longest <= 1, (longest, windows, lost, swapped)
    assert member["rtp"]["codec"] == "opus/48000/2" and member["rtp"]["recovered"] >= lost // 2, (
        member, lost)
    assert lost > 20 and swapped > 10, (lost, swapped)


def test_high_tones_cross_the_cascade_between_foci(tmp_path):
    """The same four phones over four foci of capacity 1: each is handed to
    a focus of its own, the foci's cascades speak Opus to each other, and
    the 5 and 6 kHz tones still reach the other wideband phones; the PCMU
    phone still hears no alias."""
    need("baresip")
    from .foci import start_foci, stop_all, wait_agreement
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 1),
                                  ("s2", "secondary", 1), ("s3", "secondary", 1)])
    phones = {name: tone_phone(tmp_path, name, freq, codecs=codecs, srate=rate, record=True,
                               rtp_span=4)          # room for the call a handover brings
              for name, (codecs, rate, freq) in PHONES.items()}
    try:
        for count, phone in enumerate(phones.values(), 1):
            phone.start()
            phone.dial(f"sip:{ROOM}@127.0.0.1:{nodes[0].port}")
            phone.wait_event("CALL_ESTABLISHED", 8)
            assert wait_for(lambda: sorted(Counter(
                m["focus"] for m in (nodes[0].conference(ROOM) or {"members": []})["members"]
            ).values()) == [1] * count, timeout=30), nodes[0].conference(ROOM)  # one a focus
        view, _ = wait_agreement(nodes, ROOM, lambda v: v and len(v[0]) == 4, timeout=30)
        assert view is not None, [node.conference(ROOM) for node in nodes]
        assert wait_for(lambda: all(len(node.conference(ROOM)["cascades"]) == 3
                                    for node in nodes), timeout=15)
        time.sleep(5)                       # seconds of audio across the cascades
        logs = [node.process.log() for node in nodes]
    finally:
        for phone in phones.values():
            phone.stop()
        stop_all(nodes)
    cascades = [line for log in logs for line in log.splitlines() if "cascade with" in line]
    assert len(cascades) >= 6 and all("(OPUS," in line for line in cascades), cascades
    tones = {name: freq for name, (_, _, freq) in PHONES.items()}
    heard = {name: levels(*newest_decoded(phone), sorted(set(tones.values()) | set(ALIASES)))
             for name, phone in phones.items()}
    for name in ("olga", "otto", "gina"):
        assert all(heard[name][f] > 0.05 for n, f in tones.items() if n != name), (
            name, heard[name])
        assert heard[name][tones[name]] < 0.001, (name, heard[name])
    assert heard["paul"][700] > 0.5, heard["paul"]
    assert all(heard["paul"][f] < 0.001 for f in (1000, 5000, 6000) + ALIASES), heard["paul"]


def newest_decoded(phone, seconds=2):
    """What ``phone`` decoded in its newest call (a handover brings a second
    one): the last ``seconds``, and the rate."""
    path = max(phone.recordings()["dec"])
    with wave.open(path) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = samples.reshape(-1, channels)[:, 0]
    assert len(samples) >= rate * (seconds + 1), (phone.name, path, len(samples))
    return samples[-rate * seconds:], rate
