"""Ports and processes shared by the peer controllers: loopback only, every
wait bounded, every child stopped by its PID."""

import math
import os
import signal
import shutil
import socket
import struct
import subprocess
import time
import wave

from ..harness import free_port, port_free

HOST = "127.0.0.1"


# ---- ports and processes ----------------------------------------------------

def free_sip_port():
    """A SIP port for baresip: free for UDP and TCP, and port + 1 free too
    (baresip 1.0 always listens for SIP over TLS there; a busy one made it
    fail to start, seen in CI)."""
    return free_port(count=2)


def wait_port_free(port, timeout=5.0, host=HOST, kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)):
    """Wait until ``port`` is free (UDP and TCP by default); raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while not port_free(port, host, kinds):
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {host}:{port} still in use after {timeout}s")
        time.sleep(0.05)


def _require_free(what, port, kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)):
    if not port_free(port, kinds=kinds):
        raise RuntimeError(f"{what}: port {HOST}:{port} is busy (a leaked process?); not starting")


def _stop_process(proc, grace=5.0):
    """Stop our own child ``proc`` by its PID: SIGTERM, then SIGKILL after ``grace`` s."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    return proc.returncode


def write_tone_wav(path, freq=440.0, seconds=60.0, rate=8000, amplitude=0.3):
    """A 16-bit mono PCM WAV with one sine tone (what baresip's aufile source reads).

    baresip hangs the call up when aufile reaches the end of the file, so make
    it longer than the call.
    """
    n = int(rate * seconds)
    period = [int(32767 * amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(rate)]
    second = struct.pack(f"<{rate}h", *period)  # whole seconds of an integer-Hz tone loop cleanly
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        full, rest = divmod(n, rate)
        w.writeframes(second * full + second[:2 * rest])
    return str(path)


# ---- baresip ------------------------------------------------------------------


def need(*binaries):
    """Fail (never skip) when a peer program is missing: scripts/test
    installs them as root, and a test that did not run proves nothing."""
    missing = [b for b in binaries if not shutil.which(b)]
    if missing:
        import pytest
        pytest.fail(f"missing {' '.join(missing)} (scripts/test installs them as root)")


def rtp_base(span=2):
    """An even port starting ``span`` free ports (baresip's RTP/RTCP range)."""
    return free_port(count=span, even=True)


class ChildProcess:
    """What every peer controller shares: ``with`` starts and stops it,
    ``alive()``, and its log file as text."""

    proc = None
    log_path = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    log_text = log
