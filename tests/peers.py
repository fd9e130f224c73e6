"""Real SIP peers for integration tests: baresip, linphonec and a Kamailio proxy.

Each controller writes its own loopback-only configuration into a work
directory, starts one child process and stops it by its PID, always (also
when starting fails).  Nothing here resolves names or binds anything but
127.0.0.1.  Every wait takes a timeout.

    a = Baresip(tmp / "a", "alice", sip_port, rtp_low, ctrl_port).start()
    a.dial("sip:bob@127.0.0.1:5064"); a.wait_event("CALL_ESTABLISHED", 5)
    a.stop()
"""

import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import wave

from .harness import free_port, udp_options

HOST = "127.0.0.1"
BARESIP_MODULES = "/usr/lib/baresip/modules"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

__all__ = ["Baresip", "Linphonec", "Kamailio", "free_port", "port_free", "wait_port_free",
           "write_tone_wav"]


# ---- ports and processes ----------------------------------------------------

def port_free(port, host=HOST, kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)):
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

_BARESIP_CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t{host}:{sip_port}
call_local_timeout\t120
call_max_calls\t\t4
audio_player\t\talsa,null
audio_alert\t\talsa,null
audio_source\t\taufile,{tone_wav}
ausrc_srate\t\t8000
ausrc_channels\t\t1
audio_buffer\t\t20-160
rtp_ports\t\t{rtp_low}-{rtp_high}
rtcp_mux\t\tno
jitter_buffer_delay\t1-10
net_interface\t\t{host}
dns_server\t\t{host}:53
module_path\t\t{module_path}
module\t\t\tg711.so
module\t\t\taufile.so
module\t\t\talsa.so
{sndfile}module_tmp\t\tuuid.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t{host}:{ctrl_port}
snd_path\t\t{rec_dir}
"""


class Baresip:
    """One baresip user agent, auto-answering, driven over ctrl_tcp (JSON netstrings).

    ``rtp_low`` starts the RTP port range; it is ``rtp_span`` ports wide (2 by
    default: one call, RTP on ``rtp_low`` and RTCP on ``rtp_low + 1``).
    ``tone_wav`` is the microphone (16-bit mono 8 kHz WAV); without it a
    60 s 440 Hz tone is written into the work directory.  ``register_at``
    (``"127.0.0.1:PORT"``) makes the account ``sip:NAME@127.0.0.1:PORT``,
    registered there every 60 s; otherwise the account is the phone's own
    address and nothing registers.  ``record=True`` keeps what was sent and
    received as WAV files (``recordings()``).
    """

    def __init__(self, workdir, name, sip_port, rtp_low, ctrl_port, tone_wav=None,
                 register_at=None, rtp_span=2, record=False, start_timeout=5.0):
        self.dir = os.path.abspath(str(workdir))
        self.name, self.sip_port, self.ctrl_port = name, sip_port, ctrl_port
        self.rtp_low, self.rtp_high = rtp_low, rtp_low + rtp_span - 1
        self.register_at = register_at
        self.start_timeout = start_timeout
        self.log_path = os.path.join(self.dir, "baresip.log")
        self.rec_dir = os.path.join(self.dir, "rec")
        os.makedirs(self.rec_dir, exist_ok=True)
        if tone_wav is None:
            tone_wav = write_tone_wav(os.path.join(self.dir, "tone.wav"))
        self.tone_wav = os.path.abspath(str(tone_wav))
        if register_at:
            self.aor = f"sip:{name}@{register_at}"
            params = ["regint=60"]
        else:
            self.aor = f"sip:{name}@{HOST}:{sip_port}"
            params = ["regint=0"]
        params = ["audio_codecs=PCMU"] + params + ["answermode=auto"]
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write(_BARESIP_CONFIG.format(
                host=HOST, sip_port=sip_port, ctrl_port=ctrl_port, rtp_low=self.rtp_low,
                rtp_high=self.rtp_high, tone_wav=self.tone_wav, module_path=BARESIP_MODULES,
                rec_dir=self.rec_dir, sndfile="module\t\t\tsndfile.so\n" if record else ""))
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(f"<{self.aor}>;" + ";".join(params) + "\n")
        open(os.path.join(self.dir, "contacts"), "w").close()
        self.proc = None
        self._sock = None
        self._log = None
        self._cond = threading.Condition()
        self._events = []
        self._taken = set()        # indexes of events already returned by wait_event
        self._responses = {}
        self._token = 0

    # -- process
    def start(self):
        _require_free(f"baresip {self.name} SIP", self.sip_port)
        _require_free(f"baresip {self.name} ctrl_tcp", self.ctrl_port, (socket.SOCK_STREAM,))
        _require_free(f"baresip {self.name} RTP", self.rtp_low, (socket.SOCK_DGRAM,))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["baresip", "-f", self.dir], cwd=self.dir,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + self.start_timeout
            while True:
                try:
                    self._sock = socket.create_connection((HOST, self.ctrl_port), timeout=1)
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"baresip {self.name} did not start:\n{self.log()}")
                    time.sleep(0.05)
            self._sock.settimeout(None)
            threading.Thread(target=self._read_loop, name=f"baresip-{self.name}",
                             daemon=True).start()
            self.command("listcalls", timeout=self.start_timeout)   # answers once the UA is up
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Quit politely, then SIGTERM/SIGKILL by PID; always releases everything."""
        if self.proc is not None and self.proc.poll() is None and self._sock is not None:
            try:
                self.command("quit", timeout=1)
            except Exception:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
        _stop_process(self.proc)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- ctrl_tcp: netstrings carrying JSON
    def _read_loop(self):
        buf = b""
        sock = self._sock
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += data
            while True:
                colon = buf.find(b":")
                if colon < 0:
                    break
                size = int(buf[:colon])
                if len(buf) < colon + size + 2:
                    break
                msg = json.loads(buf[colon + 1:colon + 1 + size].decode("utf-8", "replace"))
                buf = buf[colon + size + 2:]
                with self._cond:
                    if msg.get("event"):
                        self._events.append(msg)
                    elif msg.get("response"):
                        self._responses[msg.get("token")] = msg
                    self._cond.notify_all()

    def command(self, cmd, params=None, timeout=5.0):
        """Run a baresip long command (``dial``, ``hangup``, ``listcalls``...); return its
        response ``{"response": true, "ok": bool, "data": str, "token": ...}``."""
        if self._sock is None:
            raise RuntimeError(f"baresip {self.name} is not running")
        with self._cond:
            self._token += 1
            token = str(self._token)
        msg = {"command": cmd, "token": token}
        if params is not None:
            msg["params"] = params
        raw = json.dumps(msg).encode()
        self._sock.sendall(b"%d:%s," % (len(raw), raw))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"baresip {self.name}: no response to {cmd!r} in {timeout}s")
                self._cond.wait(left)
            resp = self._responses.pop(token)
        resp["data"] = _ANSI.sub("", resp.get("data") or "")
        return resp

    def events(self):
        """Every event received so far (dicts with ``type``, ``param``...), oldest first."""
        with self._cond:
            return list(self._events)

    def event_types(self):
        return [e.get("type") for e in self.events()]

    def wait_event(self, etype, timeout=10.0):
        """The oldest event of type ``etype`` not returned before; waits up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, ev in enumerate(self._events):
                    if i not in self._taken and ev.get("type") == etype:
                        self._taken.add(i)
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"baresip {self.name}: no {etype} within {timeout}s; "
                                       f"events: {[e.get('type') for e in self._events]}")
                self._cond.wait(left)

    def dial(self, uri):
        resp = self.command("dial", uri)
        if not resp.get("ok"):
            raise RuntimeError(f"baresip {self.name}: dial {uri} refused: {resp}")
        return resp

    def hangup(self):
        return self.command("hangup")

    def calls(self):
        """``listcalls`` output, one line per call (empty list when idle)."""
        data = self.command("listcalls").get("data", "")
        return [line.strip() for line in data.splitlines() if "sip:" in line]

    def registered(self):
        data = self.command("reginfo").get("data", "")
        return bool(re.search(r"\bOK\b", data)), data

    def wait_registered(self, timeout=10.0):
        """REGISTER_OK may come before ctrl_tcp is connected: poll ``reginfo``."""
        deadline = time.monotonic() + timeout
        while True:
            ok, data = self.registered()
            if ok:
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"baresip {self.name}: not registered in {timeout}s: {data}")
            time.sleep(0.1)

    # -- results
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def recordings(self):
        """WAV files written by sndfile (``record=True``): ``{"enc": [...], "dec": [...]}``."""
        files = sorted(os.listdir(self.rec_dir))
        return {kind: [os.path.join(self.rec_dir, f) for f in files if f.endswith(f"-{kind}.wav")]
                for kind in ("enc", "dec")}


# ---- linphonec ----------------------------------------------------------------

_LINPHONERC = """\
[sip]
sip_port={sip_port}
sip_tcp_port=0
sip_tls_port=0
bind_address={host}
contact="{name}" <sip:{name}@{host}:{sip_port}>
guess_hostname=0
register_only_when_network_is_up=0
register_only_when_upnp_is_ok=0
ipv6_enabled=0
use_ipv6=0
ipv6_migration_done=1
inc_timeout=60

[rtp]
bind_address={host}
audio_rtp_port={rtp_port}
video_rtp_port={video_port}
text_rtp_port={text_port}

[sound]
echocancellation=0

[video]
display=0
capture=0
automatically_initiate=0
automatically_accept=0

[audio_codec_0]
mime=PCMU
rate=8000
channels=1
enabled=1
"""

_LINPHONE_PROXY = """
[proxy_0]
reg_proxy=<sip:{via};transport=udp>
reg_route=<sip:{via};transport=udp;lr>
reg_identity="{name}" <sip:{name}@{host}>
reg_expires={expires}
reg_sendregister=1
publish=0
dial_escape_plus=0
"""


class Linphonec:
    """One ``linphonec`` driven through stdin/stdout, debug log in ``linphone.log``.

    ``HOME`` is the work directory (liblinphone needs ``$HOME/.local/share/linphone``).
    ``register_via`` (``"127.0.0.1:PORT"``) registers ``sip:NAME@127.0.0.1``
    there and uses it as outbound proxy; ``start()`` then waits for the
    registration.  ``auto_answer`` answers incoming calls while idle.
    """

    def __init__(self, workdir, name, sip_port, register_via=None, rtp_port=None,
                 auto_answer=False, reg_expires=60, start_timeout=10.0):
        self.dir = os.path.abspath(str(workdir))
        self.name, self.sip_port, self.register_via = name, sip_port, register_via
        self.auto_answer = auto_answer
        self.start_timeout = start_timeout
        self.rc_path = os.path.join(self.dir, "linphonerc")
        self.log_path = os.path.join(self.dir, "linphone.log")
        self.out_path = os.path.join(self.dir, "stdout.log")
        os.makedirs(os.path.join(self.dir, ".local", "share", "linphone"), exist_ok=True)
        self.rtp_port = rtp_port or free_port()
        with open(self.rc_path, "w") as f:
            f.write(_LINPHONERC.format(host=HOST, name=name, sip_port=sip_port,
                                       rtp_port=self.rtp_port, video_port=free_port(),
                                       text_port=free_port()))
            if register_via:
                f.write(_LINPHONE_PROXY.format(host=HOST, name=name, via=register_via,
                                               expires=reg_expires))
        self.proc = None
        self._out = None
        self._reader = None
        self._cond = threading.Condition()
        self._lines = []
        self._cursor = 0

    def start(self):
        try:
            return self._start()
        except BaseException:
            self.stop()      # never leak one: belle-sip's SO_REUSEPORT would share the port
            raise

    def _start(self):
        _require_free(f"linphonec {self.name} SIP", self.sip_port, (socket.SOCK_DGRAM,))
        args = ["linphonec", "-c", self.rc_path, "-d", "6", "-l", self.log_path]
        if self.auto_answer:
            args.append("-a")
        self._out = open(self.out_path, "w")
        self.proc = subprocess.Popen(args, cwd=self.dir, env=dict(os.environ, HOME=self.dir),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     errors="replace")
        self._reader = threading.Thread(target=self._read_loop, name=f"linphonec-{self.name}",
                                        daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while True:    # "sip port = N" (N > 0) once the core listens
            self.send("ports")
            try:
                if self.wait_output(r"sip port = (\d+)", 1.0).group(1) != "0":
                    break
            except TimeoutError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"linphonec {self.name} is not listening; see {self.log_path}")
        if self.register_via:
            self.wait_registered(max(1.0, deadline - time.monotonic()))
        return self

    def _read_loop(self):
        for line in self.proc.stdout:
            self._out.write(line)
            self._out.flush()
            line = line.replace("linphonec> ", "").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def call(self, uri):
        self.send(f"call {uri}")

    def output(self):
        with self._cond:
            return list(self._lines)

    def wait_output(self, regex, timeout=10.0, since=None):
        """The match of ``regex`` in the first stdout line after the last matched one
        (or from line ``since``); waits up to ``timeout`` s."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            i = self._cursor if since is None else since
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    i += 1
                    if m:
                        self._cursor = i
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"linphonec {self.name}: no line matching {regex!r} "
                                       f"in {timeout}s")
                self._cond.wait(left)

    def proxy_registered(self):
        """``proxy list`` says ``registered: yes`` (``status register`` is unreliable)."""
        self.send("proxy list")
        return self.wait_output(r"registered: (yes|no)", 2.0).group(1) == "yes"

    def wait_registered(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.proxy_registered():
                    return True
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"linphonec {self.name}: not registered via {self.register_via}")
            time.sleep(0.2)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(3)
            except (BrokenPipeError, ValueError, OSError, subprocess.TimeoutExpired):
                pass
        _stop_process(self.proc)
        if self.proc is not None and self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(2)     # it ends at EOF on stdout, now that the process is gone
        if self._out is not None and (self._reader is None or not self._reader.is_alive()):
            self._out.close()
            self._out = None
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---- kamailio -----------------------------------------------------------------

_KAMAILIO_CFG = """\
#!KAMAILIO
# Written by tests/peers.py: registrar + stateful proxy on udp:{host}:{port}.
# No DB, no auth, no DNS.  Users "conf*" that are not registered go to the focus
# at {host}:{focus_port}.
debug=2
log_stderror=yes
fork=yes
children={children}
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=off
dns_srv_lb=no
dns_try_naptr=no
disable_tcp=yes
enable_tls=no
listen=udp:{host}:{port}
alias="{host}:{port}"
alias="localhost:{port}"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

request_route {{
	xlog("L_INFO", "KAM: $rm $ru from $si:$sp ($ci)\\n");
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (!sanity_check("17895", "7")) {{
		exit;
	}}
	if (has_totag()) {{
		if (loose_route()) {{
			route(RELAY);
		}}
		if (is_method("ACK") && t_check_trans()) {{
			route(RELAY);
		}}
		if (uri != myself) {{
			route(RELAY);
		}}
		if (lookup("location")) {{
			route(RELAY);
		}}
		sl_send_reply("404", "Not here");
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			route(RELAY);
		}}
		exit;
	}}
	t_check_trans();
	if (is_method("REGISTER")) {{
		if (!save("location")) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (is_method("INVITE|SUBSCRIBE|REFER")) {{
		record_route();
	}}
	if (uri == myself) {{
		if (!lookup("location")) {{
			if ($rU =~ "^conf") {{
				$du = "sip:{host}:{focus_port}";
				route(RELAY);
			}}
			sl_send_reply("404", "Not Found");
			exit;
		}}
	}}
	route(RELAY);
}}

route[RELAY] {{
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}
"""


class Kamailio:
    """Kamailio as registrar + stateful proxy on ``udp:127.0.0.1:port``.

    Registered users are looked up in usrloc; unregistered users whose name
    starts with ``conf`` go to the focus on ``127.0.0.1:focus_port``;
    INVITE, SUBSCRIBE and REFER are record-routed; in-dialog requests follow
    their Route (loose_route) or go to their R-URI.  ``cfg`` replaces the
    whole configuration (the benchmarks use a bare proxy); ``cpus`` pins the
    process tree with taskset (e.g. ``"1"``); ``shm_mb`` is its shared memory.
    """

    def __init__(self, workdir, port, focus_port, children=2, cfg=None, cpus=None,
                 shm_mb=32, start_timeout=10.0):
        self.dir = os.path.abspath(str(workdir))
        self.port, self.focus_port = port, focus_port
        self.cpus = cpus
        self.shm_mb = shm_mb
        self.start_timeout = start_timeout
        os.makedirs(self.dir, exist_ok=True)
        self.cfg_path = os.path.join(self.dir, "kamailio.cfg")
        self.pid_path = os.path.join(self.dir, "kamailio.pid")
        self.log_path = os.path.join(self.dir, "kamailio.log")
        if cfg is None:
            cfg = _KAMAILIO_CFG.format(host=HOST, port=port, focus_port=focus_port,
                                       children=children)
        with open(self.cfg_path, "w") as f:
            f.write(cfg)
        self.proc = None
        self._log = None

    def check(self):
        """``kamailio -c``: (ok, output)."""
        p = subprocess.run(["kamailio", "-c", "-f", self.cfg_path], cwd=self.dir,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
        return p.returncode == 0, p.stdout.decode("utf-8", "replace")

    def start(self):
        _require_free("kamailio", self.port, (socket.SOCK_DGRAM,))
        ok, out = self.check()
        if not ok:
            raise RuntimeError(f"kamailio config {self.cfg_path} rejected:\n{out}")
        args = ["kamailio", "-f", self.cfg_path, "-DD", "-E", "-m", str(self.shm_mb), "-M", "8",
                "-P", self.pid_path, "-Y", self.dir, "-w", self.dir]
        if self.cpus is not None:
            args = ["taskset", "-c", str(self.cpus)] + args
        self._log = open(self.log_path, "wb")
        # its own session, so that a SIGKILL fallback can reach the worker children too
        self.proc = subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            deadline = time.monotonic() + self.start_timeout
            while udp_options(self.port, timeout=0.2) is None:   # any answer (404) means ready
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"kamailio did not start:\n{self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """SIGTERM to the main process (with -DD it stops its children), by PID."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # stragglers of our own process group
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

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
