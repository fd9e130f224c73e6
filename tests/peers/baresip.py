"""baresip driven over its ctrl_tcp module (JSON netstrings): a loopback-only
config, auto-answer account, commands and events."""

import json
import os
import re
import socket
import subprocess
import threading
import time

from .process import ChildProcess, HOST, _require_free, _stop_process, write_tone_wav

BARESIP_MODULES = "/usr/lib/baresip/modules"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


_BARESIP_CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t{host}:{sip_port}
call_local_timeout\t120
call_max_calls\t\t4
audio_player\t\talsa,null
audio_alert\t\talsa,null
audio_source\t\taufile,{tone_wav}
ausrc_srate\t\t{srate}
ausrc_channels\t\t1
audio_buffer\t\t20-160
rtp_ports\t\t{rtp_low}-{rtp_high}
rtcp_mux\t\tno
jitter_buffer_delay\t1-10
net_interface\t\t{host}
dns_server\t\t{host}:53
module_path\t\t{module_path}
module\t\t\tg711.so
{codec_modules}module\t\t\taufile.so
module\t\t\talsa.so
{sndfile}{srtp}module_tmp\t\tuuid.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t{host}:{ctrl_port}
snd_path\t\t{rec_dir}
{tls}"""


#: baresip's mediaenc names whose module is not srtp.so
_MEDIAENC_MODULES = {"dtls_srtp": "dtls_srtp", "dtls_srtpf": "dtls_srtp", "srtp-mandf": "srtp"}


class Baresip(ChildProcess):
    """One baresip user agent, auto-answering, driven over ctrl_tcp (JSON netstrings).

    ``rtp_low`` starts the RTP port range; it is ``rtp_span`` ports wide (2 by
    default: one call, RTP on ``rtp_low`` and RTCP on ``rtp_low + 1``).
    ``tone_wav`` is the microphone (16-bit mono 8 kHz WAV); without it a
    60 s 440 Hz tone is written into the work directory.  ``register_at``
    (``"127.0.0.1:PORT"``) makes the account ``sip:NAME@127.0.0.1:PORT``,
    registered there every 60 s; otherwise the account is the phone's own
    address and nothing registers.  ``record=True`` keeps what was sent and
    received as WAV files (``recordings()``).  ``mediaenc`` (``srtp``,
    ``srtp-mand``...) loads srtp.so and sets the account's media
    encryption; ``cafile`` (a PEM CA) is what it trusts for SIP over TLS
    (dial ``...;transport=tls``).  ``certificate`` (a PEM of certificate
    and key) lets it accept TLS connections too, on ``sip_port + 1`` (a
    focus that takes its call over must connect to it).  ``codecs``: what
    it offers (baresip's names, e.g. ``opus``, ``G722``, ``PCMU``), with
    ``srate`` its microphone's rate (the tone WAV's).
    """

    def __init__(self, workdir, name, sip_port, rtp_low, ctrl_port, tone_wav=None,
                 register_at=None, rtp_span=2, record=False, start_timeout=5.0,
                 outbound=None, answer="auto", password=None, regint=60, mediaenc=None,
                 cafile=None, certificate=None, codecs="PCMU", srate=8000):
        self.dir = os.path.abspath(str(workdir))
        self.name, self.sip_port, self.ctrl_port = name, sip_port, ctrl_port
        self.rtp_low, self.rtp_high = rtp_low, rtp_low + rtp_span - 1
        self.tls_port = sip_port + 1 if certificate else None
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
            params = [f"regint={regint}"]
        else:
            self.aor = f"sip:{name}@{HOST}:{sip_port}"
            params = ["regint=0"]
        params = [f"audio_codecs={codecs}"] + params + [f"answermode={answer}"]
        if outbound:                # every call goes through this proxy
            params.append(f'outbound="{outbound}"')
        if password:                # digest credentials (RFC 3261 §22)
            params.append(f"auth_pass={password}")
        if mediaenc:                # SRTP: srtp (best effort), srtp-mand, srtp-mandf
            params.append(f"mediaenc={mediaenc}")
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write(_BARESIP_CONFIG.format(
                host=HOST, sip_port=sip_port, ctrl_port=ctrl_port, rtp_low=self.rtp_low,
                rtp_high=self.rtp_high, tone_wav=self.tone_wav, module_path=BARESIP_MODULES,
                srate=srate, codec_modules="".join(
                    f"module\t\t\t{m}.so\n" for m in ("opus", "g722")
                    if m in codecs.lower()),
                rec_dir=self.rec_dir, sndfile="module\t\t\tsndfile.so\n" if record else "",
                srtp=f"module\t\t\t{_MEDIAENC_MODULES.get(mediaenc, 'srtp')}.so\n"
                if mediaenc else "",
                tls=(f"sip_cafile\t\t{os.path.abspath(cafile)}\n" if cafile else "") + (
                    f"sip_certificate\t\t{os.path.abspath(certificate)}\n" if certificate
                    else "")))
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
        if self.tls_port:
            _require_free(f"baresip {self.name} SIP over TLS", self.tls_port,
                          (socket.SOCK_STREAM,))
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

    def events(self, etype=None):
        """Every event received so far (dicts with ``type``, ``param``...),
        oldest first; only those of type ``etype`` if given."""
        with self._cond:
            return [dict(ev) for ev in self._events if etype in (None, ev.get("type"))]

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
    def recordings(self):
        """WAV files written by sndfile (``record=True``): ``{"enc": [...], "dec": [...]}``."""
        files = sorted(os.listdir(self.rec_dir))
        return {kind: [os.path.join(self.rec_dir, f) for f in files if f.endswith(f"-{kind}.wav")]
                for kind in ("enc", "dec")}


# ---- linphonec ----------------------------------------------------------------


def tone_phone(tmp_path, name, freq=440.0, rtp_span=2, register_at=None, seconds=90,
               outbound=None, answer="auto", password=None, regint=60, srate=8000,
               amplitude=0.3, **options):
    """A baresip phone in ``tmp_path/name`` sending a ``freq`` Hz tone, with
    free SIP, control and RTP ports (``rtp_span`` RTP ports: a handover
    needs room for the second call)."""
    from .process import free_port, free_sip_port, rtp_base
    work = os.path.join(str(tmp_path), name)
    os.makedirs(work)
    low = rtp_base(max(2, rtp_span))
    return Baresip(work, name, free_sip_port(), low, free_port(),
                   tone_wav=write_tone_wav(os.path.join(work, "tone.wav"), freq=freq,
                                           seconds=seconds, rate=srate, amplitude=amplitude),
                   srate=srate,
                   register_at=register_at, rtp_span=rtp_span, outbound=outbound,
                   answer=answer, password=password, regint=regint, **options)


def dial_all(phones, uri, timeout=8):
    """Start each phone, dial ``uri`` and wait for the call, one after another."""
    for phone in phones:
        phone.start()
        phone.dial(uri)
        phone.wait_event("CALL_ESTABLISHED", timeout)

