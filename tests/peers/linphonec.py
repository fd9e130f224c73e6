"""linphonec driven through stdin/stdout, with its debug log; optional
registration through a proxy."""

import os
import re
import socket
import subprocess
import threading
import time

from .process import ChildProcess, HOST, _require_free, _stop_process, free_port


_LINPHONERC = """\
[sip]
sip_port={sip_port}
sip_tcp_port=0
sip_tls_port={tls_port}
bind_address={host}
contact="{name}" <sip:{name}@{host}:{sip_port}>
guess_hostname=0
register_only_when_network_is_up=0
register_only_when_upnp_is_ok=0
ipv6_enabled=0
use_ipv6=0
ipv6_migration_done=1
inc_timeout=60
{sip_extra}
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
"""

#: without it liblinphone offers its own defaults (Opus first)
_PCMU_ONLY = """
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


class Linphonec(ChildProcess):
    """One ``linphonec`` driven through stdin/stdout, debug log in ``linphone.log``.

    ``HOME`` is the work directory (liblinphone needs ``$HOME/.local/share/linphone``).
    ``register_via`` (``"127.0.0.1:PORT"``) registers ``sip:NAME@127.0.0.1``
    there and uses it as outbound proxy; ``start()`` then waits for the
    registration.  ``auto_answer`` answers incoming calls while idle.
    ``session_expires`` (seconds) turns its RFC 4028 session timers on.

    ``tls_port`` opens a SIP over TLS listening point (belle-sip sends
    nothing over TLS without one: dial ``...;transport=tls``); ``root_ca``
    (a PEM file) is what it trusts, and ``verify_cn=False`` skips the name
    check (mbedtls 2.28, under liblinphone 5.1, matches no IP address SAN,
    so a certificate for 127.0.0.1 fails it).  ``media_encryption``
    (``srtp``...) with ``encryption_mandatory`` offers RTP/SAVP only.
    ``dtmf_info`` sends keys as SIP INFO ``application/dtmf-relay``
    instead of RFC 2833 events.
    """

    def __init__(self, workdir, name, sip_port, register_via=None, rtp_port=None,
                 auto_answer=False, reg_expires=60, start_timeout=10.0, password=None,
                 realm=None, algorithm=None, session_expires=None, tls_port=None,
                 root_ca=None, verify_cn=True, media_encryption=None,
                 encryption_mandatory=False, dtmf_info=False, default_codecs=False):
        self.dir = os.path.abspath(str(workdir))
        self.name, self.sip_port, self.register_via = name, sip_port, register_via
        self.aor = f"sip:{name}@{HOST}"     # its From: liblinphone drops the contact's port
        self.tls_port = tls_port
        self.auto_answer = auto_answer
        self.start_timeout = start_timeout
        self.rc_path = os.path.join(self.dir, "linphonerc")
        self.log_path = os.path.join(self.dir, "linphone.log")
        self.out_path = os.path.join(self.dir, "stdout.log")
        os.makedirs(os.path.join(self.dir, ".local", "share", "linphone"), exist_ok=True)
        self.rtp_port = rtp_port or free_port()
        sip_extra = {}
        if root_ca:
            sip_extra.update(root_ca=os.path.abspath(str(root_ca)), verify_server_certs=1,
                             verify_server_cn=int(verify_cn))
        if media_encryption:
            sip_extra.update(media_encryption=media_encryption,
                             media_encryption_mandatory=int(encryption_mandatory))
        if dtmf_info:
            sip_extra.update(use_info=1, use_rfc2833=0)
        with open(self.rc_path, "w") as f:
            f.write(_LINPHONERC.format(host=HOST, name=name, sip_port=sip_port,
                                       tls_port=tls_port or 0,
                                       sip_extra="".join(f"{k}={v}\n"
                                                         for k, v in sip_extra.items()),
                                       rtp_port=self.rtp_port, video_port=free_port(),
                                       text_port=free_port()))
            if not default_codecs:
                f.write(_PCMU_ONLY)
            if session_expires:         # RFC 4028 session timers, refreshed by linphonec
                f.write(f"\n[sip]\nsession_expires_enabled=1\n"
                        f"session_expires_value={session_expires}\n"
                        f"session_expires_min_value=90\n")
            if register_via:
                f.write(_LINPHONE_PROXY.format(host=HOST, name=name, via=register_via,
                                               expires=reg_expires))
            if password:                # digest credentials (RFC 3261 §22)
                f.write(f"\n[auth_info_0]\nusername={name}\npasswd={password}\n"
                        f"realm={realm}\ndomain={HOST}\n"
                        + (f"algorithm={algorithm}\n" if algorithm else ""))
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
        if self.tls_port:
            _require_free(f"linphonec {self.name} SIP/TLS", self.tls_port, (socket.SOCK_STREAM,))
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

    def use_files(self, play=None, record=None):
        """No sound card: the microphone plays WAV ``play``, what it hears
        goes to WAV ``record`` (16-bit mono, at the call's rate)."""
        self.send("soundcard use files")
        self.wait_output(r"Using wav files", 3.0)
        if play:
            self.send(f"play {os.path.abspath(str(play))}")
        if record:
            self.send(f"record {os.path.abspath(str(record))}")

    def send_dtmf(self, keys):
        """Press ``keys`` in the current call: linphonec takes a line of
        only keys as DTMF.  It sleeps 1 s after each key without running
        its SIP stack, so with ``use_info`` an INFO's 200 is read late and
        the next key's INFO waits for it: two keys in one line leave about
        2 s apart (more on a busy machine); a key sent once the previous
        INFO is answered leaves at once, about 1 s after it."""
        if not keys or any(k not in "0123456789*#" for k in keys):
            raise ValueError(f"not DTMF keys: {keys!r}")
        self.send(keys)

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


# ---- reading its debug log ------------------------------------------------------

_BELLESIP_IO = re.compile(r"^\S+ \S+ belle-sip-message-channel \[\w+\]: (?:message sent to "
                          r"\[(?P<to>[^\]]+)\]|"
                          r"received \[\d+\] new bytes from \[(?P<frm>[^\]]+)\])")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} ")


def linphone_messages(log):
    """The SIP messages in a liblinphone debug log: ``(sent, peer, text)``, in order.

    belle-sip logs each one after a ``message sent to [UDP://h:p]`` or
    ``received [N] new bytes from [UDP://h:p]:`` line, up to the next
    timestamped log line."""
    out, current = [], None
    for line in log.splitlines():
        m = _BELLESIP_IO.match(line)
        if m or _LOG_LINE.match(line):
            if current is not None:
                out.append((current[0], current[1], "\n".join(current[2]).strip()))
                current = None
            if m:
                current = (m.group("to") is not None, m.group("to") or m.group("frm"), [])
        elif current is not None:
            current[2].append(line)
    if current is not None:
        out.append((current[0], current[1], "\n".join(current[2]).strip()))
    return out


# ---- kamailio -----------------------------------------------------------------
