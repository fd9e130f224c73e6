"""Members mixed on one core at 20 ms (issue 6): CPU per member and tick
lateness of the MediaEngine under synthetic RTP, against a bare Python UDP
echo on loopback measured in the same run.

For each N (``--members``, default 100,200,300,400), three processes:

* **senders** (core 0): N synthetic PCMU streams (a tone each, 160-byte
  payloads, one packet per 20 ms), every stream with its own random phase
  within the 20 ms period so the packets are spread out as from phones that
  are not synchronised.  ``--per-socket`` streams (default 50) share one UDP
  socket; each socket is bound on an even port with its RTCP socket on the
  next one (so the engine's RTCP sender reports land somewhere and are
  counted).  Pacing is a loop on ``time.perf_counter`` with short sleeps;
  the achieved send rate, the lateness of each send against its schedule
  and the senders' own CPU are reported, so a sender that cannot keep up
  shows.  The mixes the engine sends back are read and counted.
* **engine** (core 1): the real Twisted reactor (epoll), an
  ``RTPPortPool`` on 127.0.0.1 (``--ports``, default 40000-41999; ports
  someone else holds are skipped by the pool), a ``MediaEngine`` and N
  parties in one conference, each on its own endpoint with a ``Negotiated``
  whose remote is its sender's socket (PCMU, sendrecv).  After ``--warmup``
  seconds (2) it measures a window of ``--seconds`` (10):
    - CPU fraction of one core = process CPU time / wall time, CPU per
      member in % of a core and in µs per member per 20 ms tick (this is
      everything: reading RTP through the reactor, parsing, jitter buffer,
      decoding, the mix, encoding, sending, RTCP);
    - the work of the tick itself (``tick_once`` timed with perf_counter),
      p50/p99, so the receive path is the rest;
    - tick lateness p50/p99/max from ``engine.lateness`` over the window;
    - RTP packets received (the endpoints' ``packets``) and sent (the
      streams' ``sent_packets``) per second, against N*50 each;
    - the garbage collector's pauses per generation (gc.callbacks);
    - core 1's busy time from /proc/stat minus the engine's CPU: what other
      processes (another session's tests) took from the core meanwhile.
* **ceiling**, same run (before and after the N series, the mean used): a
  bare Python UDP echo (``recvfrom_into``/``sendto`` in a tight loop on one
  socket, core 1), driven from core 0 with ``--window`` (32) 172-byte
  datagrams in flight for ``--echo-seconds`` (3).  Its packets handled per
  second (one in + one out per echo) divided by its CPU fraction is the
  echo's packets/s per core.

The engine handles two packets per member per tick (one in, one out):
engine packets/s per core = (received + sent)/s / CPU fraction; the ratio
printed is that over the echo's packets/s per core (1.0 would mean the
mixing costs nothing beyond moving the datagrams in Python).

Goal (issue 6): >= 300 members per core with p99 tick lateness < 5 ms.  An
N meets it when the CPU fraction is <= 1.0 of one core, the p99 tick
lateness is < 5 ms, and the engine kept up (received and sent >= 98 % of
N*50 packets/s; a saturated single core shows as lost packets and caught-up
ticks rather than a CPU fraction over 1).  Exit 0 when 300 members (or
more) meet it, 2 when it is missed or no N >= 300 was run, 1 on errors.

``--srtp``: every N is run twice in the same run, plain RTP and SRTP
(RFC 3711, ``--srtp-suite``, default AES_CM_128_HMAC_SHA1_80): the senders
protect what they send with each member's key, the engine unprotects,
mixes and protects what it sends back.  Members per core (N / CPU
fraction) of both are printed, and their ratio (SRTP over plain).

``--record DIR``: the engine records the conference's whole mix to a WAV
file in DIR (media/recording.py, fed by the engine's tap each tick, written
once a second), as a focus with ``[recording] directory`` does; compare
a run with it to one without.

``--metrics``: the engine observes its metrics as a focus with ``--http``
does (metrics.py: tick lateness per tick, jitter buffer delays per RTCP
report; its packet counts are read when scraped, at no cost here).

The machine is shared and noisy: compare the ratio and the medians, not one
absolute time.  The "others" column is core 1's busy time (/proc/stat)
minus the engine's own CPU: what another process took from the engine's
core during its window.  An N whose window others disturbed by more than
10 % is run again (``--retries``, default 2; the least disturbed run is
kept) and marked "(noisy)" if it stays disturbed.

    python bench/mixer_bench.py [--members 100,200,300,400] [--seconds 10] [--quick] [--srtp]
"""

import argparse
import gc
import json
import math
import os
import random
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TICK = 0.020
GOAL_MEMBERS = 300
GOAL_P99 = 0.005
KEEP_UP = 0.98
NOISY = 0.10            # others' share of core 1 above which a run is redone
PAYLOAD_TYPES = {"PCMU": 0, "G722": 9, "OPUS": 96}  # what the senders send
TICKS = {"PCMU": 160, "G722": 160, "OPUS": 960}      # RTP timestamp units per 20 ms
PINNED = (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity")


def pin(core):
    if PINNED:
        os.sched_setaffinity(0, {core})


def core_busy(core):
    """(busy, total) jiffies of one core from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{core} "):
                    v = [int(x) for x in line.split()[1:]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    return sum(v[:8]) - idle, sum(v[:8])
    except OSError:
        pass
    return None


def srtp_keys(seed, i, suite):
    """(the engine's key, the sender's key) of member ``i``: both sides
    derive them from the seed, so no key crosses a pipe."""
    import hashlib
    from twisted_mfocus.media.srtp import SUITES
    size = SUITES[suite].key_salt
    return tuple(hashlib.sha512(f"{seed}/{i}/{side}".encode()).digest()[:size]
                 for side in ("engine", "sender"))


def pct(values, q):
    """q-th percentile (nearest rank) of a non-empty sequence."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


# -- engine (core 1) -------------------------------------------------------------


def role_engine():
    pin(1)
    from twisted.internet import reactor
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                                globalLogBeginner, textFileLogObserver)
    from twisted_mfocus.media.engine import MediaEngine
    from twisted_mfocus.media.rtp import PortsExhausted, RTPPortPool
    from twisted_mfocus.media.sdp import Negotiated
    from twisted_mfocus.media.srtp import Keys

    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(LogLevel.warn)])],
        redirectStandardIO=False)
    cfg = json.loads(sys.stdin.readline())
    remotes = [tuple(r) for r in cfg["remotes"]]
    pool = RTPPortPool(reactor, cfg["low"], cfg["high"], interface="127.0.0.1")
    try:
        endpoints = [pool.allocate() for _ in remotes]
    except PortsExhausted as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 1
    print(json.dumps({"ports": [e.port for e in endpoints]}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1

    engine = MediaEngine(reactor, speakers=cfg.get("mixed", 3), rate=cfg.get("rate", 16000))
    if cfg.get("metrics"):          # as a focus with --http has it (metrics.py)
        from twisted_mfocus.metrics import Metrics
        engine.metrics = Metrics()
    work = array("d")
    gc_pauses = {0: array("d"), 1: array("d"), 2: array("d")}
    gc_start = [0.0]

    def gc_watch(phase, info):
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses[info["generation"]].append(time.perf_counter() - gc_start[0])

    gc.callbacks.append(gc_watch)
    tick_once = engine.tick_once

    def timed():
        t = time.perf_counter()
        tick_once()
        work.append(time.perf_counter() - t)

    engine.tick_once = timed
    suite = cfg.get("srtp")
    for i, (endpoint, remote) in enumerate(zip(endpoints, remotes)):
        keys = None
        if suite:
            ours, theirs = srtp_keys(cfg["seed"], i, suite)
            keys = Keys(suite, local=ours, remote=theirs)
        codec = cfg.get("codec", "PCMU")
        engine.add("bench", f"m{i}", endpoint,
                   Negotiated(codec, PAYLOAD_TYPES[codec], 101, remote, "sendrecv", False,
                              keys=keys, profile="RTP/SAVP" if suite else "RTP/AVP"))
    recorder = None
    if cfg.get("record"):           # --record DIR: the conference's mix to a WAV file
        from twisted_mfocus.media.recording import Recorder, create
        path, wav = create(cfg["record"], "bench", time.time())
        recorder = Recorder(wav, engine.rate, time.time())
        engine.tap("bench", recorder.push)
    failure = []

    def failed(f):
        failure.append(f.getTraceback())
        sys.stderr.write(failure[-1])
        reactor.stop()

    engine._loop.deferred.addErrback(failed)

    def snap():
        streams = [s for _, s in engine.streams.values()]
        return {"cpu": time.process_time(), "wall": time.perf_counter(),
                "late": len(engine.lateness), "work": len(work),
                "in": sum(e.packets for e in endpoints),
                "out": sum(s.sent_packets for s in streams),
                "late_pkts": sum(s.receiver.late for s in streams),
                "bad": sum(s.receiver.bad for s in streams),
                "dropped": sum(sum(s.dropped.values()) for s in streams),
                "core": core_busy(1), "gc": {g: len(v) for g, v in gc_pauses.items()}}

    marks = {}

    def begin():
        marks["a"] = snap()

    def end():
        marks["b"] = snap()
        reactor.stop()

    reactor.callLater(cfg["warmup"], begin)
    reactor.callLater(cfg["warmup"] + cfg["seconds"], end)
    reactor.run()
    if recorder is not None:
        recorder.stop(time.time())
        wav.close()
        print(f"recorded {recorder.seconds:.1f} s to {path} in {recorder.writes} writes",
              file=sys.stderr)
    if failure or "b" not in marks:
        print(json.dumps({"error": "tick failed: " + (failure[0].splitlines()[-1]
                                                      if failure else "no measurement")}),
              flush=True)
        return 1
    a, b = marks["a"], marks["b"]
    wall = b["wall"] - a["wall"]
    late = engine.lateness[a["late"]:b["late"]]
    ticks = list(work[a["work"]:b["work"]])
    res = {"n": len(endpoints), "wall": wall, "cpu": (b["cpu"] - a["cpu"]) / wall,
           "in_rate": (b["in"] - a["in"]) / wall, "out_rate": (b["out"] - a["out"]) / wall,
           "late_pkts": b["late_pkts"] - a["late_pkts"], "bad": b["bad"] - a["bad"],
           "dropped": b["dropped"] - a["dropped"],
           "ticks": len(late), "frames": len(ticks),
           "lat_p50": pct(late, 50) if late else None,
           "lat_p99": pct(late, 99) if late else None,
           "lat_max": max(late) if late else None,
           "work_p50": pct(ticks, 50) if ticks else None,
           "work_p99": pct(ticks, 99) if ticks else None,
           "work_sum": sum(ticks) / wall,
           "ports": [endpoints[0].port, max(e.port for e in endpoints) + 1]}
    for g, v in gc_pauses.items():
        pauses = v[a["gc"][g]:b["gc"][g]]
        res[f"gc{g}"] = [len(pauses), max(pauses, default=0.0), sum(pauses) / wall]
    if a["core"] and b["core"]:
        busy = (b["core"][0] - a["core"][0]) / max(1, b["core"][1] - a["core"][1])
        res["core_busy"] = busy
        res["others"] = max(0.0, busy - res["cpu"])
    print(json.dumps(res), flush=True)
    return 0


# -- senders (core 0) ----------------------------------------------------------------


def bind_pair(start):
    """Two UDP sockets on an even port p and p+1 at or after ``start``."""
    port = start + (start % 2)
    while port < 65000:
        a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), None
        try:
            a.bind(("127.0.0.1", port))
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b.bind(("127.0.0.1", port + 1))
            return a, b, port
        except OSError:
            a.close()
            if b is not None:
                b.close()
            port += 2
    raise RuntimeError("no free UDP port pair for the senders")


def sender_payloads(codec, freq):
    """One second (50 frames) of ``freq`` Hz (0: silence) as ``codec``
    payloads, looped by the senders (a whole number of periods per second)."""
    import numpy as np
    from twisted_mfocus.media.codecs import CODECS, Transcoder
    from twisted_mfocus.media.g711 import encode
    if codec == "PCMU":
        t = np.arange(160) / 8000
        return [encode("PCMU", (1000 * np.sin(2 * np.pi * freq * t)).astype(np.int16))
                .tobytes()] * 50
    coder = Transcoder(CODECS[codec])       # as a phone would code it, at 16 kHz
    t = np.arange(16000) / 16000
    wave = (1000 * np.sin(2 * np.pi * freq * t)).astype(np.int16).reshape(50, 320)
    return [coder.encode(frame) for frame in wave]


def role_senders(n, per_socket, base_port, seed, suite=None, codec="PCMU", speakers=0):
    pin(0)
    from twisted_mfocus.media.packet import build_rtp
    from twisted_mfocus.media.srtp import Keys, SrtpContext

    rnd = random.Random(seed)
    socks, rtcps, port = [], [], base_port
    for _ in range(math.ceil(n / per_socket)):
        a, b, port = bind_pair(port)
        for s in (a, b):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        socks.append(a)
        rtcps.append(b)
        port += 2
    owner = [i // per_socket for i in range(n)]
    print(json.dumps({"remotes": [list(socks[owner[i]].getsockname()) for i in range(n)]}),
          flush=True)
    ports = json.loads(sys.stdin.readline())["ports"]
    payloads = {}
    streams = []
    pt, ticks = PAYLOAD_TYPES[codec], TICKS[codec]
    for i in range(n):
        freq = 250 + 50 * (i % 16)     # a whole number of periods in 20 ms
        if speakers and i >= speakers:
            freq = 0                    # --speakers: the others send silence
        if freq not in payloads:
            payloads[freq] = sender_payloads(codec, freq)
        protect = None
        if suite:           # the member's side of the keys (RFC 4568: each its own)
            engine_key, sender_key = srtp_keys(seed, i, suite)
            protect = SrtpContext(Keys(suite, local=sender_key, remote=engine_key)).protect_rtp
        streams.append([socks[owner[i]], ("127.0.0.1", ports[i]), rnd.getrandbits(32),
                        rnd.getrandbits(16), rnd.getrandbits(32), payloads[freq], protect])
    phase = [rnd.random() * TICK for _ in range(n)]
    order = sorted(range(n), key=phase.__getitem__)
    poller = select.epoll()
    fds = {}
    for kind, group in ((0, socks), (1, rtcps)):
        for s in group:
            poller.register(s.fileno(), select.EPOLLIN)
            fds[s.fileno()] = (kind, s)
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN)
    print("started", flush=True)
    got = [0, 0]
    buf = bytearray(2048)
    lateness = array("d")
    sent = errors = 0
    stop = False

    def drain(timeout):
        nonlocal stop
        for fd, _ in poller.poll(timeout):
            if fd == stdin:
                stop = True
                continue
            kind, s = fds[fd]
            while True:
                try:
                    s.recv_into(buf)
                except BlockingIOError:
                    break
                got[kind] += 1

    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.01
    cycle = j = 0
    while not stop:
        due = t0 + cycle * TICK + phase[order[j]]
        now = time.perf_counter()
        if due > now:
            wait = due - now
            if wait > 0.002:
                drain(wait - 0.001)
            else:
                drain(0)
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            continue
        st = streams[order[j]]
        try:
            packet = build_rtp(pt, st[3], st[4], st[2], st[5][cycle % 50])
            st[0].sendto(st[6](packet) if st[6] else packet, st[1])
            sent += 1
        except OSError:
            errors += 1
        st[3] = (st[3] + 1) & 0xFFFF
        st[4] = (st[4] + ticks) & 0xFFFFFFFF
        lateness.append(now - due)
        j += 1
        if j == n:
            j = 0
            cycle += 1
            drain(0)
    elapsed = time.perf_counter() - t0
    cpu = (time.process_time() - cpu0) / elapsed
    print(json.dumps({"sent_rate": sent / elapsed, "errors": errors, "elapsed": elapsed,
                      "recv_rate": got[0] / elapsed, "rtcp": got[1], "cpu": cpu,
                      "send_late_p50": pct(lateness, 50) if lateness else None,
                      "send_late_p99": pct(lateness, 99) if lateness else None}),
          flush=True)
    return 0


# -- the ceiling: a bare Python UDP echo -----------------------------------------------


def role_echo():
    pin(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1], flush=True)
    buf = bytearray(2048)
    mv = memoryview(buf)
    n, addr = s.recvfrom_into(buf)
    cpu0, t0 = time.process_time(), time.perf_counter()
    count = 0
    recvfrom_into, sendto = s.recvfrom_into, s.sendto
    while not (n == 4 and buf[:4] == b"STOP"):
        sendto(mv[:n], addr)
        count += 1
        n, addr = recvfrom_into(buf)
    wall = time.perf_counter() - t0
    stats = {"echoes": count, "wall": wall, "cpu": (time.process_time() - cpu0) / wall,
             "core": None}
    s.sendto(json.dumps(stats).encode(), addr)
    return 0


def echo_ceiling(seconds, window):
    """{rate: echoes/s, cpu: echo CPU fraction, per_core: packets/s per core}."""
    proc = subprocess.Popen([sys.executable, __file__, "--role", "echo"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        dest = ("127.0.0.1", port)
        data = bytes(172)
        busy0 = core_busy(1)
        for _ in range(window):
            s.sendto(data, dest)
        got = refills = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        buf = bytearray(2048)
        while time.perf_counter() < end:
            try:
                s.recv_into(buf)
            except socket.timeout:       # datagrams lost: fill the window again
                refills += 1
                for _ in range(window):
                    s.sendto(data, dest)
                continue
            got += 1
            s.sendto(data, dest)
        wall = time.perf_counter() - t0
        busy1 = core_busy(1)
        stats = None
        for _ in range(50):
            s.sendto(b"STOP", dest)
            try:
                while True:
                    reply = s.recv(2048)
                    if reply.startswith(b"{"):
                        stats = json.loads(reply)
                        break
            except socket.timeout:
                continue
            break
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not stats:
        raise RuntimeError("the echo did not report")
    res = {"rate": got / wall, "cpu": stats["cpu"], "refills": refills}
    res["per_core"] = 2 * stats["echoes"] / stats["wall"] / max(stats["cpu"], 1e-6)
    if busy0 and busy1:
        busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        res["others"] = max(0.0, busy - stats["cpu"])
    return res


# -- one engine run ------------------------------------------------------------------------


def _ask(proc, command, what, err):
    """Send a child its command line; its one JSON line back."""
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the {what} died (see {err.name})")
    result = json.loads(line)
    if "error" in result:
        raise RuntimeError(f"{what}: {result['error']} (see {err.name})")
    return result


def run_members(n, args, logdir, suite=None, codec="PCMU"):
    """Start senders and engine for ``n`` members (SRTP with ``suite``) on
    ``codec``; (engine result, sender result)."""
    low, high = (int(x) for x in args.ports.split("-"))
    mode = ("srtp" if suite else "plain") + "-" + codec
    err = open(os.path.join(logdir, f"engine-{n}-{mode}.log"), "w")
    serr = open(os.path.join(logdir, f"senders-{n}-{mode}.log"), "w")
    senders = subprocess.Popen(
        [sys.executable, __file__, "--role", "senders", "--n", str(n),
         "--per-socket", str(args.per_socket), "--sender-port", str(args.sender_port),
         "--seed", str(args.seed + n), "--codec", codec, "--speakers", str(args.speakers)]
        + (["--srtp-suite", suite] if suite else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=serr, text=True)
    engine = subprocess.Popen([sys.executable, __file__, "--role", "engine"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                              text=True)
    try:
        remotes = json.loads(senders.stdout.readline())["remotes"]
        engine.stdin.write(json.dumps({"remotes": remotes, "low": low, "high": high,
                                       "warmup": args.warmup, "srtp": suite,
                                       "codec": codec, "mixed": args.mixed,
                                       "rate": args.mix_rate, "metrics": args.metrics,
                                       "seed": args.seed + n, "record": args.record,
                                       "seconds": args.seconds}) + "\n")
        engine.stdin.flush()
        ports = json.loads(engine.stdout.readline())
        if "error" in ports:
            raise RuntimeError(ports["error"])
        senders.stdin.write(json.dumps(ports) + "\n")
        senders.stdin.flush()
        if senders.stdout.readline().strip() != "started":
            raise RuntimeError("the senders did not start")
        eres = _ask(engine, "go", "engine", err)
        sres = _ask(senders, "stop", "senders", serr)
        engine.wait(timeout=30)
        senders.wait(timeout=30)
        return eres, sres
    finally:
        for p in (senders, engine):
            if p.poll() is None:
                p.kill()
                p.wait()
        err.close()
        serr.close()


def meets(e, n):
    kept = e["in_rate"] >= KEEP_UP * n * 50 and e["out_rate"] >= KEEP_UP * n * 50
    return e["cpu"] <= 1.0 and e["lat_p99"] is not None and e["lat_p99"] < GOAL_P99 and kept


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("engine", "senders", "echo"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--members", default="100,200,300,400",
                    help="comma-separated member counts (default 100,200,300,400)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="100,300 members, 5 s windows")
    ap.add_argument("--ports", default="40000-41999", help="the engine's RTP port range")
    ap.add_argument("--sender-port", type=int, default=46000,
                    help="first port tried for the senders' RTP/RTCP socket pairs")
    ap.add_argument("--per-socket", type=int, default=50, help="streams per sender socket")
    ap.add_argument("--echo-seconds", type=float, default=3.0)
    ap.add_argument("--window", type=int, default=32, help="echo datagrams in flight")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--srtp", action="store_true",
                    help="run every N also with SRTP members; print SRTP vs plain per core")
    ap.add_argument("--srtp-suite", default=None, help="the SRTP suite (default "
                    "AES_CM_128_HMAC_SHA1_80; the senders' role gets it from the driver)")
    ap.add_argument("--codec", default="PCMU", help=argparse.SUPPRESS)
    ap.add_argument("--codecs", default="PCMU",
                    help="run every N with members on each of these codecs (PCMU, OPUS, "
                    "G722), the first the reference of the others' ratio")
    ap.add_argument("--speakers", type=int, default=0,
                    help="only the first K members send a tone, the others silence "
                    "(0: all send a tone)")
    ap.add_argument("--mix-rate", type=int, default=16000, choices=(16000, 48000),
                    help="the mixer's rate ([media] mix_rate)")
    ap.add_argument("--mixed", type=int, default=3,
                    help="the engine mixes the loudest this many ([media] speakers; 0: all)")
    ap.add_argument("--metrics", action="store_true",
                    help="the engine observes its metrics, as with --http (metrics.py)")
    ap.add_argument("--record", metavar="DIR", default=None,
                    help="the engine records the conference's mix to a WAV file in DIR "
                    "(media/recording.py), as [recording] does")
    ap.add_argument("--retries", type=int, default=2,
                    help="runs again an N whose window others disturbed (> 10 %% of core 1)")
    args = ap.parse_args()
    if args.role == "engine":
        return role_engine()
    if args.role == "senders":
        return role_senders(args.n, args.per_socket, args.sender_port, args.seed,
                            args.srtp_suite, args.codec, args.speakers)
    if args.role == "echo":
        return role_echo()
    if args.quick:
        args.members, args.seconds = "100,300", 5.0
    counts = [int(x) for x in args.members.split(",") if x.strip()]
    pin(0)
    logdir = tempfile.mkdtemp(prefix="mixer-bench-")
    where = "engine and echo on core 1, senders and echo driver on core 0" if PINNED \
        else "NOT pinned (one core?)"
    print(f"members {counts}; warm-up {args.warmup:g} s, window {args.seconds:g} s; {where}; "
          f"engine ports {args.ports}; {args.per_socket} streams per sender socket; "
          f"load average {os.getloadavg()[0]:.2f}; logs in {logdir}", flush=True)
    errors = []
    echoes = []

    def ceiling(when):
        try:
            c = echo_ceiling(args.echo_seconds, args.window)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
            errors.append(f"echo ({when}): {e}")
            print(f"echo ceiling ({when}): ERROR {e}", flush=True)
            return
        echoes.append(c)
        print(f"echo ceiling ({when}): {c['rate']:.0f} echoes/s with {args.window} in flight, "
              f"echo CPU {100 * c['cpu']:.0f} % of core 1 -> {c['per_core']:.0f} packets/s "
              f"(in+out) per core; others on core 1 {100 * c.get('others', 0):.0f} %"
              + (f"; {c['refills']} window refills after losses" if c["refills"] else ""),
              flush=True)

    ceiling("before")
    results = {}                # N -> (engine, senders) of plain RTP members
    secure = {}                 # N -> the same with SRTP members (--srtp)
    suite = (args.srtp_suite or "AES_CM_128_HMAC_SHA1_80") if args.srtp else None

    codecs = [c.strip().upper() for c in args.codecs.split(",") if c.strip()]
    others = {c: {} for c in codecs[1:]}    # --codecs: codec -> N -> (engine, senders)

    def measure(n, suite, into, codec=codecs[0]):
        label = f"{n} {'SRTP' if suite else 'plain'} members" if args.srtp else f"{n} members"
        if len(codecs) > 1:
            label += f" on {codec}"
        for attempt in range(1 + args.retries):
            try:
                e, s = run_members(n, args, logdir, suite, codec)
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as ex:
                errors.append(f"{label}: {ex}")
                print(f"{label}: ERROR {ex}", flush=True)
                break
            if n not in into or e.get("others", 0) < into[n][0].get("others", 0):
                into[n] = (e, s)
            if e.get("others", 0) <= NOISY:
                break
            if attempt < args.retries:
                print(f"{label}: others took {100 * e['others']:.0f} % of core 1 during "
                      f"the window (> {100 * NOISY:.0f} %): run again; discarded run: "
                      f"CPU {100 * e['cpu']:.1f} %, lateness p99 {1e3 * e['lat_p99']:.2f} ms, "
                      f"out {e['out_rate']:.0f}/s", flush=True)
        if n not in into:
            return
        e, s = into[n]
        exp = n * 50
        print(f"{label}: engine CPU {100 * e['cpu']:.1f} % of core 1 "
              f"({100 * e['cpu'] / n:.3f} % / member, {1e6 * e['cpu'] * TICK / n:.1f} µs per "
              f"member per tick); tick work p50/p99 {1e3 * e['work_p50']:.2f}/"
              f"{1e3 * e['work_p99']:.2f} ms ({100 * e['work_sum']:.0f} % of the core, "
              f"the rest is the receive path and the reactor); lateness p50/p99/max "
              f"{1e3 * e['lat_p50']:.2f}/{1e3 * e['lat_p99']:.2f}/{1e3 * e['lat_max']:.2f} ms "
              f"over {e['ticks']} ticks ({e['frames']} frames); RTP in {e['in_rate']:.0f}/s, "
              f"out {e['out_rate']:.0f}/s (expected {exp}/s each); late packets "
              f"{e['late_pkts']}, bad {e['bad']}, dropped {e['dropped']}; others on core 1 "
              f"{100 * e.get('others', 0):.0f} %", flush=True)
        print("    garbage collections in the window (count, longest ms, % of the core): "
              + ", ".join(f"gen{g} {e[f'gc{g}'][0]}, {1e3 * e[f'gc{g}'][1]:.2f}, "
                          f"{100 * e[f'gc{g}'][2]:.1f}" for g in range(3)), flush=True)
        print(f"    senders: {s['sent_rate']:.0f} packets/s sent of {exp}/s "
              f"({100 * s['sent_rate'] / exp:.1f} %), send lateness p50/p99 "
              f"{1e3 * s['send_late_p50']:.2f}/{1e3 * s['send_late_p99']:.2f} ms, "
              f"{s['recv_rate']:.0f} mixes/s read back, {s['rtcp']} RTCP reports, "
              f"{s['errors']} send errors, sender CPU {100 * s['cpu']:.0f} % of core 0"
              + ("  <- SENDER BEHIND" if s["sent_rate"] < KEEP_UP * exp else ""), flush=True)

    for n in counts:
        measure(n, None, results)
        if suite:
            measure(n, suite, secure)
        for codec, into in others.items():
            measure(n, None, into, codec)
    ceiling("after")

    per_core = statistics.mean(c["per_core"] for c in echoes) if echoes else None
    print()
    print("members  CPU%core  %/member  us/member/tick  tick-work p99 ms  "
          "lateness p50/p99/max ms  in/s   out/s  pkts/s/core  ratio-to-echo  others%  goal")
    for n, (e, s) in results.items():
        pps = (e["in_rate"] + e["out_rate"]) / max(e["cpu"], 1e-6)
        ratio = f"{pps / per_core:.3f}" if per_core else "n/a"
        print(f"{n:7d}  {100 * e['cpu']:8.1f}  {100 * e['cpu'] / n:8.3f}  "
              f"{1e6 * e['cpu'] * TICK / n:14.1f}  {1e3 * e['work_p99']:16.2f}  "
              f"{1e3 * e['lat_p50']:7.2f}/{1e3 * e['lat_p99']:6.2f}/{1e3 * e['lat_max']:7.2f}  "
              f"{e['in_rate']:6.0f} {e['out_rate']:6.0f}  {pps:11.0f}  {ratio:>13}  "
              f"{100 * e.get('others', 0):7.0f}  {'met' if meets(e, n) else 'MISSED'}"
              + ("  (noisy)" if e.get("others", 0) > NOISY else ""))
    if per_core:
        print(f"echo ceiling: {per_core:.0f} packets/s (in+out) per core (mean of "
              f"{len(echoes)}: " + ", ".join(f"{c['per_core']:.0f}" for c in echoes) + ")")
    if secure:
        print()
        print(f"SRTP ({suite}) against plain RTP members, same run: members per core = "
              f"N / CPU fraction of one core")
        print("members  plain CPU%  SRTP CPU%  plain members/core  SRTP members/core  "
              "SRTP/plain  SRTP goal")
        for n, (e, _) in secure.items():
            if n not in results:
                continue
            p = results[n][0]
            plain_core, srtp_core = n / max(p["cpu"], 1e-6), n / max(e["cpu"], 1e-6)
            print(f"{n:7d}  {100 * p['cpu']:9.1f}  {100 * e['cpu']:9.1f}  {plain_core:18.0f}  "
                  f"{srtp_core:17.0f}  {srtp_core / plain_core:10.3f}  "
                  f"{'met' if meets(e, n) else 'MISSED'}"
                  + ("  (noisy)" if max(e.get("others", 0), p.get("others", 0)) > NOISY else ""))
        both = [n for n in secure if n in results]
        if both:
            n = max(both)
            plain_core = n / max(results[n][0]["cpu"], 1e-6)
            srtp_core = n / max(secure[n][0]["cpu"], 1e-6)
            print(f"at {n} members: {srtp_core:.0f} SRTP members per core against "
                  f"{plain_core:.0f} plain ones (ratio {srtp_core / plain_core:.3f}; "
                  f"SRTP costs {100 * (plain_core / srtp_core - 1):.0f} % more CPU per member)")
    if others:
        print()
        print(f"members per core (N / CPU fraction of one core) by codec, same run, against "
              f"{codecs[0]}" + (f"; {args.speakers} members speak, the others send silence"
                                if args.speakers else "; every member sends a tone"))
        print("members  codec  CPU%core  members/core  ratio  lateness p99 ms  goal")
        for n, (e, _) in results.items():
            ref = n / max(e["cpu"], 1e-6)
            rows = [(codecs[0], e)] + [(c, into[n][0]) for c, into in others.items()
                                        if n in into]
            for codec, r in rows:
                per = n / max(r["cpu"], 1e-6)
                print(f"{n:7d}  {codec:5s}  {100 * r['cpu']:8.1f}  {per:12.0f}  "
                      f"{per / ref:5.2f}  {1e3 * r['lat_p99']:15.2f}  "
                      f"{'met' if meets(r, n) else 'MISSED'}"
                      + ("  (noisy)" if r.get("others", 0) > NOISY else ""))
    ok = [n for n, (e, _) in results.items() if meets(e, n)]
    good = max(ok) if ok else None
    print(f"goal (CPU <= 1 core, p99 lateness < {1e3 * GOAL_P99:.0f} ms, >= {100 * KEEP_UP:.0f} % "
          f"of packets in and out) met for N = {sorted(ok) or 'none'}; largest N meeting it: "
          f"{good if good is not None else 'none'}")
    quiet = [n for n, (e, _) in results.items() if e.get("others", 0) <= NOISY and meets(e, n)]
    if quiet:
        # A linear estimate from the largest undisturbed N that kept up.
        n = max(quiet)
        e = results[n][0]
        print(f"at {n} members one member costs {100 * e['cpu'] / n:.3f} % of a core: "
              f"about {n / e['cpu']:.0f} members would fill the core (linear estimate; the "
              f"cost per member falls as N grows, see the table)")
    noisy = [n for n, (e, _) in results.items() if e.get("others", 0) > NOISY]
    if noisy:
        print(f"NOTE: other processes took > {100 * NOISY:.0f} % of core 1 during the window "
              f"of N = {noisy} even after {args.retries} retries: those rows understate "
              f"what the engine can do")
    behind = [n for n, (e, s) in results.items() if s["sent_rate"] < KEEP_UP * n * 50]
    if behind:
        print(f"NOTE: the senders could not keep up for N = {behind}: those figures are low")
    if errors:
        for e in errors:
            print(f"ERROR: {e}")
        return 1
    if GOAL_MEMBERS not in results:
        bigger = [n for n in ok if n >= GOAL_MEMBERS]
        if bigger:
            print(f"goal of {GOAL_MEMBERS} members: met (at {min(bigger)})")
            return 0
        print(f"goal of {GOAL_MEMBERS} members: not tested")
        return 2
    met = meets(results[GOAL_MEMBERS][0], GOAL_MEMBERS)
    print(f"goal of {GOAL_MEMBERS} members per core with p99 lateness < "
          f"{1e3 * GOAL_P99:.0f} ms: {'met' if met else 'MISSED'}")
    return 0 if met else 2


if __name__ == "__main__":
    sys.exit(main())
