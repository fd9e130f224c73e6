"""The systemd unit's promises (etc/mfocus.service): ``Type=notify``
readiness (sdnotify.py) over a real ``AF_UNIX`` datagram socket, by a
real ``twistd mfocus`` (no systemd needed: the test is the listener);
the unit as ``systemd-analyze verify`` reads it; and why it leaves
``MemoryDenyWriteExecute`` out (tests/mdwe.py runs code under the same
seccomp filter)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid

import pytest
from twisted.internet import defer

from twisted_mfocus.sdnotify import Readiness, notify
from twisted_mfocus.sip.address import Peer

from . import mdwe
from .harness import ROOT, Focus, api_get, free_port, udp_options, write_config

UNIT = os.path.join(ROOT, "etc", "mfocus.service")


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    """(the NOTIFY_SOCKET value, the bound datagram socket systemd would hold)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        # sun_path holds 108 bytes: a short directory of our own, not tmp_path
        short = tempfile.mkdtemp(prefix="mfn-", dir="/tmp")
        request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
        value = address = os.path.join(short, "notify")
    else:
        value = f"@mfocus-test-{uuid.uuid4().hex}"
        address = "\0" + value[1:]
    s.bind(address)
    s.settimeout(20)
    yield value, s
    s.close()


def _lines(datagram):
    return datagram.decode().split("\n")


def _nothing_waiting(s):
    s.setblocking(False)
    try:
        s.recv(4096)
        return False
    except BlockingIOError:
        return True
    finally:
        s.settimeout(20)


def test_notify_sends_one_datagram(listener):
    value, s = listener
    assert notify("READY=1", {"NOTIFY_SOCKET": value}) is True
    assert s.recv(4096) == b"READY=1"
    assert notify("READY=1", {}) is False               # not under systemd
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "@no-such-" + uuid.uuid4().hex}) is False


def test_readiness_waits_for_every_listener(listener):
    value, s = listener
    environ = {"NOTIFY_SOCKET": value}
    sip = type("SIP", (), {"ready": defer.Deferred()})()
    readiness = Readiness(sip, environ)
    readiness.startService()
    assert _nothing_waiting(s)                          # not listening yet
    sip.ready.callback([Peer("UDP", "127.0.0.1", 5060), Peer("TCP", "::1", 5060)])
    assert _lines(s.recv(4096)) == [
        "READY=1", "STATUS=listening on udp:127.0.0.1:5060 tcp:[::1]:5060"]
    readiness.stopService()
    assert s.recv(4096) == b"STOPPING=1"
    failed = type("SIP", (), {"ready": defer.succeed(None)})()    # _listen_failed's None
    Readiness(failed, environ).startService()
    assert _nothing_waiting(s)


def _start(tmp_path, port, value, extra=()):
    http = free_port()
    low = free_port(count=10, even=True)
    return Focus(["--listen", f"udp:127.0.0.1:{port}", "--http",
                  f"tcp:{http}:interface=127.0.0.1", "--rtp-ports", f"{low}-{low + 9}",
                  "--config", write_config(tmp_path, "")] + list(extra),
                 tmp_path, env={"NOTIFY_SOCKET": value}), http


def test_a_real_focus_says_ready_once_it_listens_and_stopping_on_sigterm(listener, tmp_path):
    value, s = listener
    port = free_port()
    focus, http = _start(tmp_path, port, value)
    try:
        lines = _lines(s.recv(4096))
        assert lines == ["READY=1", f"STATUS=listening on udp:127.0.0.1:{port}"], \
            focus.log()
        assert udp_options(port) == 200                 # it was listening when it said so
        assert api_get(http, "/api/v1/conferences") == (200, [])
        focus.terminate()
        assert s.recv(4096) == b"STOPPING=1"
    finally:
        code = focus.stop()
    # twistd ends as the signal that stopped it, which systemd takes as a
    # clean stop (SuccessExitStatus: SIGTERM is one by default).
    assert code == -signal.SIGTERM and "Server Shut Down." in focus.log(), focus.log()


def test_a_focus_that_cannot_listen_is_never_ready(tmp_path):
    value = f"@mfocus-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        s.bind("\0" + value[1:])
        taken.bind(("127.0.0.1", 0))
        focus, _ = _start(tmp_path, taken.getsockname()[1], value)
        try:
            focus.proc.wait(20)
        finally:
            code = focus.stop()
        assert code == 1 and "cannot listen on udp:127.0.0.1" in focus.log()
        assert _nothing_waiting(s)


# -- the unit file -------------------------------------------------------------------

def _directives():
    out = {}
    with open(UNIT) as f:
        for line in f:
            key, eq, value = line.strip().partition("=")
            if eq and not line.startswith(("#", " ")):
                out[key] = value
    return out


def test_the_unit_is_hardened_and_ready_by_notification():
    unit = _directives()
    assert unit["Type"] == "notify" and unit["NotifyAccess"] == "main"
    for key, value in [("DynamicUser", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("NoNewPrivileges", "yes"), ("LockPersonality", "yes"),
                       ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
                       ("CapabilityBoundingSet", "")]:
        assert unit[key] == value, key
    assert "AmbientCapabilities" not in unit        # 5060 needs no capability
    assert "MemoryDenyWriteExecute" not in unit     # see the next test


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit():
    done = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "mfocus.service" not in done.stderr, done.stderr     # no complaint about it


#: What the focus needs of its native libraries, each on its own line.
EXERCISE = """
import os
import numpy as np
from twisted_mfocus.media.codecs import CODECS, Transcoder
from twisted_mfocus.media.srtp import Keys, SrtpContext

def run(name, fn):
    try:
        fn()
        print(name, "ok")
    except MemoryError as e:
        print(name, "MemoryError", e)

def codecs():
    frame = (np.sin(np.arange(320) / 5) * 8000).astype(np.int16)
    for name in ("OPUS", "G722", "PCMU"):
        coder = Transcoder(CODECS[name])
        coder.decode(coder.encode(frame))

def srtp():
    a, b = os.urandom(30), os.urandom(30)
    rtp = bytes([0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7]) + bytes(160)
    suite = "AES_CM_128_HMAC_SHA1_80"
    sent = SrtpContext(Keys(suite, a, b)).protect_rtp(rtp)
    assert SrtpContext(Keys(suite, b, a)).unprotect_rtp(sent) == rtp

def tls():
    from OpenSSL import SSL
    SSL.Context(SSL.TLS_METHOD).set_verify(SSL.VERIFY_PEER, lambda *args: True)

run("codecs", codecs)
run("srtp", srtp)
run("tls", tls)
"""


@pytest.mark.skipif(not mdwe.SUPPORTED, reason="the filter is written for x86-64 Linux")
def test_memory_deny_write_execute_would_break_tls_only():
    """numpy, libopus, G.722 and libsrtp use no JIT and run under the
    filter; pyOpenSSL's callbacks (cffi ffi.callback) cannot be made, so
    TLS cannot work: the unit leaves MemoryDenyWriteExecute out.  When
    this fails because TLS works, the unit may set it."""
    done = subprocess.run([sys.executable, mdwe.__file__, sys.executable, "-c", EXERCISE],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["codecs ok", "srtp ok"], done.stdout
    assert lines[2].startswith("tls MemoryError") and "write+execute" in lines[2], done.stdout
