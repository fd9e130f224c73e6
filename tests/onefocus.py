"""One ``twistd mfocus`` with its API, for tests of single-focus calls with
real phones (UDP, and TLS with a throw-away CA); what a baresip phone
decoded (sndfile's ``-dec.wav``) and the tones in it."""

import wave

import numpy as np

from .certs import make_ca_and_leaf
from .harness import Focus, api_get, free_port, write_config
from .tones import band_levels

ROOM = "secure"
ALICE, BOB, INJECTED = 440, 1000, 1500


class Server:
    """One ``twistd mfocus`` on UDP (and TLS with ``tls``), with its API."""

    def __init__(self, tmp_path, rtp_ports, config="", tls=False):
        self.dir = tmp_path / f"focus-{rtp_ports}"
        self.dir.mkdir()
        self.port, self.http = free_port(), free_port()
        self.tls = free_port() if tls else None
        args = ["--listen", f"udp:127.0.0.1:{self.port}", "--rtp-ports", rtp_ports,
                "--http", f"tcp:{self.http}:interface=127.0.0.1"]
        if tls:
            self.certs = make_ca_and_leaf(self.dir)
            config += (f"[tls]\ncertificate = {self.certs['cert']}\n"
                       f"key = {self.certs['key']}\n")
            args += ["--listen", f"tls:127.0.0.1:{self.tls}"]
        args += ["--config", write_config(self.dir, "[events]\nnotify_interval = 0.05\n" +
                                          config)]
        self.process = Focus(args, self.dir)
        try:
            self.process.wait_ready(self.port)
        except BaseException:
            self.process.stop()         # never leave a focus behind
            raise

    def uri(self, transport="udp"):
        if transport == "tls":
            return f"sip:{ROOM}@127.0.0.1:{self.tls};transport=tls"
        return f"sip:{ROOM}@127.0.0.1:{self.port}"

    def members(self):
        status, body = api_get(self.http, f"/api/v1/conferences/{ROOM}")
        return {m["uri"]: m for m in body["members"]} if status == 200 else {}

    def stop(self):
        self.process.stop()


def decoded(phone):
    """The last 2 s of what ``phone`` decoded (sndfile's -dec.wav)."""
    (path,) = phone.recordings()["dec"]
    with wave.open(path) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(samples) >= 8000 * 3, (phone.name, len(samples))
    return samples[-8000 * 2:]


def tones_heard(phone, freqs=(ALICE, BOB, INJECTED)):
    """The tones in what ``phone`` decoded (> 0.2 of the strongest), the
    others clearly absent (< 0.01)."""
    levels = band_levels(decoded(phone), freqs)
    loud = {f for f, level in levels.items() if level > 0.2}
    assert all(levels[f] < 0.01 for f in freqs if f not in loud), (phone.name, levels)
    return loud
