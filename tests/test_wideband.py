"""Wideband conferences (issue 17): baresip phones on Opus, G.722 and PCMU
in one conference, each sending its own tone, judged by what each phone
decoded (sndfile's ``-dec.wav``, at its decoder's rate).

The focus mixes at 16 kHz: the 5 and 6 kHz tones of the wideband phones
reach the other wideband phones; the PCMU phone hears what 8 kHz carries
and no alias of the high tones (a 6 kHz tone folded at 8 kHz would be 2
kHz, a 5 kHz one 3 kHz); nobody hears itself."""

import time
import wave

import numpy as np

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


def test_opus_g722_and_pcmu_phones_hear_each_other_in_the_band_each_can_carry(tmp_path):
    need("baresip")
    workdir = tmp_path / "focus"
    workdir.mkdir()
    port, http = free_port(), free_port()
    config = write_config(workdir, "[media]\nspeakers = 0\n")     # four tones at once
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
