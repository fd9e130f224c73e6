"""Start real ``twistd mfocus`` processes and talk SIP to them on loopback."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: ``twistd`` run by this interpreter, whatever is on PATH.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


#: [limits] lifted: a load generator sends everything from one address
NO_SOURCE_LIMITS = """\
[limits]
requests_per_second = 0
calls_per_source = 0
subscriptions_per_source = 0
rooms_per_source = 0
notify_bytes_per_second = 0
"""


#: SIPp members send no RTP: calls held longer than [media] rtp_timeout need it off
SILENT_MEMBERS = """\
[media]
rtp_timeout = 0
"""


def write_config(directory, text="", name="mfocus.conf"):
    """A config file in ``directory`` holding ``text``; its path."""
    path = os.path.join(str(directory), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _outside_ephemeral():
    """Ports the kernel never hands out on its own: outside
    ip_local_port_range and the focus's default RTP pool (20000-29999).

    A port taken from the ephemeral range was free when we looked, but any
    socket bound to port 0 (a probe, an outgoing TCP connection of a focus)
    could be given it before the peer we chose it for bound it (seen in CI).
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return [p for p in list(range(30000, 40000)) + list(range(61000, 65536))
            if not low <= p <= high]


_PORTS = _outside_ephemeral()
_cursor = [int.from_bytes(os.urandom(2), "big") % len(_PORTS)]


def free_port(host="127.0.0.1", count=1, even=False):
    """The first of ``count`` consecutive ports free for both UDP and TCP on
    ``host`` (an even one if asked), outside the kernel's ephemeral range.
    Successive calls walk the range, so a port handed out (or its run of
    ``count``) is not handed out again soon."""
    for _ in range(len(_PORTS)):
        i = _cursor[0] % len(_PORTS)
        port = _PORTS[i]
        _cursor[0] += 1
        run = _PORTS[i:i + count]
        if (even and port % 2) or run != list(range(port, port + count)):
            continue
        if all(port_free(p, host) for p in run):
            _cursor[0] += count - 1
            return port
    raise RuntimeError("no free port")


def port_free(port, host="127.0.0.1", kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)):
    """True when ``port`` can be bound on ``host`` for every socket kind in ``kinds``.

    No SO_REUSEADDR/SO_REUSEPORT: a process holding the port with
    SO_REUSEPORT (belle-sip does) still makes the bind fail.
    """
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def options_request(port, local_port, host="127.0.0.1", transport="UDP", call_id=None):
    call_id = call_id or uuid.uuid4().hex
    return (f"OPTIONS sip:probe@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {host}:{local_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:tester@{host}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:probe@{host}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def udp_options(port, host="127.0.0.1", timeout=1.0):
    """Send one OPTIONS over UDP; return the status line's code or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        if s.getsockname()[1] == port:
            # The kernel handed the probe the very port the focus is about
            # to bind: it would talk to itself (and hold the port).
            return None
        s.settimeout(timeout)
        call_id = uuid.uuid4().hex
        s.sendto(options_request(port, s.getsockname()[1], host, call_id=call_id), (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535)
            except socket.timeout:
                return None
            if data.startswith(b"SIP/2.0 ") and call_id.encode() in data:
                return int(data.split(b" ", 2)[1])
    return None


class Focus:
    """A ``twistd -n mfocus`` child process."""

    def __init__(self, args, cwd, env=None):
        self.args = list(args)
        self.cwd = str(cwd)
        self.log_path = os.path.join(self.cwd, "mfocus.log")
        environ = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        environ.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            TWISTD + ["--nodaemon", "--pidfile=", "mfocus"] + self.args,
            cwd=self.cwd, env=environ, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, port, host="127.0.0.1", timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mfocus exited early:\n" + self.log())
            if udp_options(port, host, timeout=0.3) == 200:
                return
        raise RuntimeError("mfocus did not answer OPTIONS:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def terminate(self):
        """SIGTERM without waiting (several foci leave at once)."""
        if self.proc.poll() is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    terminated = False

    def stop(self, timeout=20.0):
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


SIPP_DIR = os.path.join(ROOT, "tests", "sipp")


def run_sipp(scenario, target, cwd, extra=(), timeout=120):
    """Run SIPp to completion; return (exit code, final cumulative stats).

    Stats come from SIPp's own ``-trace_stat`` CSV: keys such as
    ``SuccessfulCall(C)`` and ``FailedCall(C)`` with integer values.
    """
    stat = os.path.join(str(cwd), "stat.csv")
    args = ["sipp", target, "-sf", os.path.join(SIPP_DIR, scenario),
            "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
            "-trace_stat", "-stf", stat, "-fd", "1",
            "-timeout", f"{timeout - 5}s", "-timeout_error", "-trace_err"] + list(extra)
    proc = subprocess.run(args, cwd=str(cwd), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=timeout)
    return proc.returncode, read_sipp_stats(stat)


def read_sipp_stats(path):
    with open(path) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    header, last = rows[0], rows[-1]
    stats = {}
    for key, value in zip(header, last):
        try:
            stats[key] = int(value)
        except ValueError:
            stats[key] = value
    return stats


class Sipp:
    """A SIPp process run in the background in its own directory.

    Its ``-trace_logs`` lines (the scenario's ``<log>``), ``-trace_msg``
    messages and exit code are what tests assert on."""

    def __init__(self, scenario, target, cwd, args=(), timeout=60, name=None, port=None):
        self.cwd = os.path.join(str(cwd), name or os.path.splitext(scenario)[0])
        os.makedirs(self.cwd, exist_ok=True)
        self.scenario = scenario
        self.port = port or free_port()
        self.timeout = timeout
        # A file of tests/sipp/, or the name of a SIPp built-in (uas, uac).
        which = (["-sf", os.path.join(SIPP_DIR, scenario)] if scenario.endswith(".xml")
                 else ["-sn", scenario])
        cmd = ["sipp"] + ([target] if target else []) + which + [
               "-i", "127.0.0.1", "-p", str(self.port), "-nostdin",
               "-timeout", f"{timeout}s", "-timeout_error",
               "-trace_msg", "-trace_err", "-trace_logs"] + list(args)
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self):
        """Exit code; the process is killed if it outlives its timeout."""
        try:
            self.proc.wait(self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _read(self, suffix):
        name = os.path.splitext(os.path.basename(self.scenario))[0]
        out = []
        for entry in sorted(os.listdir(self.cwd)):
            if entry.startswith(name + "_") and entry.endswith(suffix):
                with open(os.path.join(self.cwd, entry), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
        return "".join(out)

    def logs(self):
        """The scenario's ``<log>`` lines."""
        return [line for line in self._read("_logs.log").splitlines() if line.strip()]

    def errors(self):
        return self._read("_errors.log")

    def messages(self, received=None):
        """Every traced message as text, in order; ``received`` True or
        False keeps only what SIPp received or sent."""
        out = []
        for block in re.split(r"^-{20,} [^\n]*\n", self._read("_messages.log"), flags=re.M):
            kind, _, message = block.partition("\n")
            if not message.strip():
                continue
            got = " received " in kind
            if received is None or got == received:
                out.append(message.strip("\n"))
        return out


def sip_body(message):
    """The body of a traced SIP message (after the blank line)."""
    head, _, body = message.replace("\r\n", "\n").partition("\n\n")
    return body


def sip_header(message, name):
    """The first value of header ``name`` in a traced message, or None."""
    for line in message.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def api_get(port, path, token=None):
    """(status, JSON) of ``GET http://127.0.0.1:port/path`` (with
    ``Authorization: Bearer token`` when ``token`` is given)."""
    return _api(port, path, token=token)


def api_post(port, path, token=None):
    """(status, JSON) of ``POST http://127.0.0.1:port/path`` with no body
    (``Content-Type: application/json``, as the API asks of every POST)."""
    return _api(port, path, b"", token)


def _api(port, path, data=None, token=None):
    import json
    import urllib.error
    import urllib.request
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if data is not None:                # a POST: JSON, or the API refuses it (415)
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until it returns something true; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def notify_documents(sipp, schema):
    """The conference-info documents SIPp received, each schema-checked."""
    from lxml import etree
    docs = []
    for message in sipp.messages(received=True):
        if not message.startswith("NOTIFY "):
            continue
        assert sip_header(message, "Content-Type") == "application/conference-info+xml"
        doc = etree.fromstring(sip_body(message).encode())
        schema.assertValid(doc)
        docs.append((sip_header(message, "Subscription-State"), doc))
    return docs
