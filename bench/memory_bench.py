"""Memory a focus keeps under abuse: RSS growth of ``twistd -n mfocus`` under two loads.

Each load gets a fresh ``twistd -n mfocus --role primary`` on a free UDP port of
127.0.0.1, with a config that lifts every per-source limit (``[limits]``, all 0:
unlimited) and keeps ``capacity = 200`` (the default, as join_bench runs it).
After 10 warm-up join+leave calls (so lazy imports and first-call caches are
in the idle figure) a thread samples VmRSS of /proc/PID/status every 50 ms;
idle RSS is the median of the samples of the second before the load.  For each
load the bench prints:

* peak: the highest sample from the load's start until 5 s after its end,
  minus idle;
* +5 s: the sample 5 s after the load ended, minus idle (what is not given back
  soon; completed transactions still wait for Timers H/J/L/M, 32 s);
* +40 s (with ``--late``): the sample 40 s after the end, once every
  transaction timer has fired, minus idle: what is never returned.

Loads (each bounded in count, rate and time):

* churn: SIPp join+leave cycles (bench/sipp/join_leave_uac.xml: INVITE with
  SDP, 200, ACK, BYE, 200) to the room "bench", ``-r 500 -m 20000`` with at
  most ``-l 200`` calls outstanding, as join_bench drives it; SIPp's failed
  calls are printed;
* flood: 20,000 INVITEs with SDP to the room "bench" from one UDP socket in
  this process, at 2,000/s, each with its own Call-ID, From tag and branch,
  never ACKed: the focus admits ``capacity`` of them (200, then BYE when no
  ACK comes) and answers the rest 486, retransmitted until Timer H.  The
  responses are read (and counted by status) so that the socket stays open.

* plateau (issue 18; only with ``--only plateau``, about eight minutes):
  ``--first`` (5,000) SIPp join+leave cycles, then the rest of ``--cycles``
  (give 50000), each part followed by 40 s so every transaction timer has
  fired; the bench prints RSS after the first part and after all, the
  growth between them (the goal: under 5 MB, flat after a long churn) and
  that growth as a fraction of what the first part added to idle.  Its
  rate is 120/s unless ``--rate`` says otherwise: every call leaves
  transactions waiting 32 s (Timers J and L), so the calls in flight reach
  their steady state only after 32 s of load; at 500/s the first 5,000
  cycles last 10 s, and the "growth" measured the larger steady state the
  long part reached (live objects and malloc'd bytes were back to the
  first part's after it), not a leak.  The bench says so when the first
  part is shorter than that.

With ``--tree PATH`` the same loads also run against the focus of another
checkout (``PYTHONPATH=PATH``; e.g. a ``git worktree`` of an older commit), in
the same run, and the bench prints both figures and their ratio (this tree /
reference).  The focus is pinned to core 1 and the load to core 0 with
taskset when there are two cores.  Every process is bounded by a timeout and
stopped by its PID.

    python bench/memory_bench.py [--tree PATH] [--only churn|flood]
                                 [--cycles 20000] [--rate 500]
                                 [--invites 20000] [--flood-rate 2000] [--late]
    python bench/memory_bench.py --only plateau --cycles 50000 [--first 5000]
"""

import argparse
import collections
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.harness import TWISTD, free_port, udp_options  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from join_bench import pin, pinning, run_load, stop  # noqa: E402  (the same SIPp runs)

UAC = os.path.join(HERE, "sipp", "join_leave_uac.xml")
WARMUP = 10
SAMPLE = 0.05           # seconds between RSS samples
SETTLE = 5.0            # the "+5 s" figure
LATE = 40.0             # the "+40 s" figure: every transaction timer (32 s) has fired
LOADS = ("churn", "flood", "plateau")
DEFAULT_LOADS = ("churn", "flood")
PLATEAU_GOAL = 5.0      # MB of growth after the first part, at most
PLATEAU_RATE = 120      # cycles/s: the first 5,000 outlast the 32 s transaction timers
TIMERS = 32.0           # s a finished call's transactions wait (64*T1: Timers J, L)

#: Every per-source limit lifted (0: unlimited; keys unknown to a tree are
#: ignored: Config reads only the keys it knows), capacity as join_bench runs.
CONFIG = """\
[focus]
capacity = 200
[limits]
requests_per_second = 0
request_burst = 0
calls_per_source = 0
subscriptions_per_source = 0
rooms_per_source = 0
notify_bytes_per_second = 0
notify_burst_bytes = 0
"""

SDP = ("v=0\r\n"
       "o=flood {n} 1 IN IP4 127.0.0.1\r\n"
       "s=-\r\n"
       "c=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\n"
       "m=audio {media} RTP/AVP 0 101\r\n"
       "a=rtpmap:0 PCMU/8000\r\n"
       "a=rtpmap:101 telephone-event/8000\r\n"
       "a=fmtp:101 0-15\r\n"
       "a=sendrecv\r\n")


def rss_mb(pid):
    """VmRSS of ``pid`` in MB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


class Sampler(threading.Thread):
    """VmRSS of one process every SAMPLE seconds: [(monotonic time, MB)]."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            mb = rss_mb(self.pid)
            if mb is None:
                return
            self.samples.append((time.monotonic(), mb))
            self._halt.wait(SAMPLE)

    def stop(self):
        self._halt.set()
        self.join(2)

    def between(self, t0, t1):
        return [mb for t, mb in self.samples if t0 <= t <= t1]

    def at(self, t):
        """The last sample taken at or before ``t``."""
        before = [mb for ts, mb in self.samples if ts <= t]
        return before[-1] if before else None


class Focus:
    """One ``twistd -n mfocus --role primary`` from ``tree`` (None: this one)."""

    def __init__(self, tree, work):
        self.tree = tree or ROOT
        self.work = work
        self.port = free_port()
        self.proc = None

    def start(self):
        cfg = os.path.join(self.work, "mfocus.conf")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        env = dict(os.environ, PYTHONPATH=self.tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("MFOCUS_TRACE", None)
        log = open(os.path.join(self.work, "mfocus.log"), "wb")
        self.proc = subprocess.Popen(
            pin(1) + TWISTD + ["--nodaemon", "--pidfile=", "mfocus", "--role", "primary",
                               "--config", cfg, "--listen", f"udp:127.0.0.1:{self.port}"],
            cwd=self.work, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if udp_options(self.port, timeout=0.3) == 200:
                return
        raise RuntimeError(f"mfocus from {self.tree} did not answer OPTIONS "
                           f"(see {self.work}/mfocus.log)")

    def stop(self):
        stop(self.proc, grace=10.0)


def module_file(tree):
    """Which twisted_mfocus a focus run with PYTHONPATH=tree imports."""
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import twisted_mfocus; print(twisted_mfocus.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


def sipp_churn(port, calls, rate, limit, work, tag):
    """SIPp join+leave cycles; returns a short note (successful/failed calls)."""
    stat = os.path.join(work, f"{tag}-stat.csv")
    budget = int(calls / max(rate, 1)) + 60
    cmd = pin(0) + ["sipp", f"127.0.0.1:{port}", "-sf", UAC, "-s", "bench",
                    "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()),
                    "-m", str(calls), "-l", str(limit), "-r", str(rate),
                    "-recv_timeout", "5000", "-nostdin",
                    "-trace_stat", "-stf", stat, "-fd", "1",
                    "-timeout", f"{budget}s", "-timeout_error"]
    rc, stats = run_load(cmd, work, budget, stat)
    if stats is None:
        return f"SIPp rc {rc}, no statistics", calls
    ok, failed = int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
    failed = max(failed, calls - ok)
    return f"{ok} cycles ok, {failed} failed (SIPp rc {rc})", failed


def invite(n, port, local_port, media):
    """The ``n``th INVITE of the flood: its own Call-ID, From tag, branch."""
    body = SDP.format(n=n, media=media).encode()
    tag = uuid.uuid4().hex
    head = (f"INVITE sip:bench@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{tag}{n};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: \"flood\" <sip:flood-{n}@127.0.0.1:{local_port}>;tag={tag[:10]}\r\n"
            f"To: <sip:bench@127.0.0.1:{port}>\r\n"
            f"Call-ID: {tag}-{n}@127.0.0.1\r\n"
            f"CSeq: 1 INVITE\r\n"
            f"Contact: <sip:flood-{n}@127.0.0.1:{local_port}>\r\n"
            f"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
            f"Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class Flood:
    """INVITEs from one UDP socket, never ACKed; the answers counted by status."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.statuses = collections.Counter()
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self):
        while not self._done.is_set():
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            first = data.split(b"\r\n", 1)[0].split(b" ", 2)
            if first[0] == b"SIP/2.0" and len(first) > 1:
                self.statuses[first[1].decode()] += 1
            else:
                self.statuses[first[0].decode(errors="replace")] += 1

    def run(self, count, rate):
        """Send ``count`` INVITEs at ``rate`` per second (a 10 ms tick)."""
        self._reader.start()
        local = self.sock.getsockname()[1]
        start = time.monotonic()
        sent = 0
        deadline = start + 5 * count / rate + 30
        while sent < count and time.monotonic() < deadline:
            due = min(count, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                try:
                    self.sock.sendto(invite(sent, self.port, local, 40000 + 2 * (sent % 10000)),
                                     ("127.0.0.1", self.port))
                except OSError:
                    pass             # a full send buffer drops one: the count says so
                sent += 1
            time.sleep(0.01)
        return sent

    def close(self):
        self._done.set()
        self._reader.join(2)
        self.sock.close()

    def note(self, sent):
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return f"{sent} INVITEs sent; received {parts or 'nothing'}"


def measure(load, tree, args, work):
    """Run one load against a fresh focus from ``tree``; a dict of figures."""
    focus = Focus(tree, work)
    sampler = None
    try:
        focus.start()
        note, failed = sipp_churn(focus.port, WARMUP, 10, WARMUP, work, "warmup")
        if failed:
            raise RuntimeError(f"warm-up failed: {note}")
        sampler = Sampler(focus.proc.pid)
        sampler.start()
        time.sleep(1.5)
        t_idle = time.monotonic()
        idle = statistics.median(sampler.between(t_idle - 1.0, t_idle))
        t0 = time.monotonic()
        flood = None
        try:
            if load == "churn":
                note, _ = sipp_churn(focus.port, args.cycles, args.rate, args.limit, work,
                                     "churn")
            else:
                flood = Flood(focus.port)
                sent = flood.run(args.invites, args.flood_rate)
            t1 = time.monotonic()
            time.sleep(SETTLE)
        finally:
            if flood is not None:
                flood.close()
        if flood is not None:
            note = flood.note(sent)
        t_settle = time.monotonic()
        if focus.proc.poll() is not None:
            raise RuntimeError(f"mfocus exited during the load (see {work}/mfocus.log)")
        peak = max(sampler.between(t0, t_settle))
        settled = sampler.at(t1 + SETTLE)
        late = None
        if args.late:
            time.sleep(max(0.0, t1 + LATE - time.monotonic()))
            late = sampler.at(t1 + LATE)
        return {"idle": idle, "peak": peak - idle, "settled": settled - idle,
                "late": None if late is None else late - idle,
                "seconds": t1 - t0, "note": note}
    finally:
        if sampler is not None:
            sampler.stop()
        focus.stop()


def plateau(tree, args, work):
    """RSS after ``args.first`` cycles and after ``args.cycles``, each once
    every transaction timer has fired (LATE seconds after the part)."""
    focus = Focus(tree, work)
    sampler = None
    try:
        focus.start()
        sampler = Sampler(focus.proc.pid)
        sampler.start()
        time.sleep(1.5)
        idle = statistics.median(sampler.between(time.monotonic() - 1.0, time.monotonic()))
        notes, figures = [], []
        for tag, cycles in (("first", args.first), ("rest", args.cycles - args.first)):
            note, _ = sipp_churn(focus.port, cycles, args.rate, args.limit, work, tag)
            notes.append(note)
            time.sleep(LATE)
            if focus.proc.poll() is not None:
                raise RuntimeError(f"mfocus exited during the load (see {work}/mfocus.log)")
            figures.append(sampler.at(time.monotonic()))
        first, after = figures
        return {"idle": idle, "first": first, "after": after, "note": "; ".join(notes)}
    finally:
        if sampler is not None:
            sampler.stop()
        focus.stop()


def plateau_line(label, r, args):
    growth, added = r["after"] - r["first"], r["first"] - r["idle"]
    verdict = "MET" if growth < PLATEAU_GOAL else "MISSED"
    share = f"{growth / added:.2f}" if added > 0.5 else "n/a"
    text = (f"  {label:9s} idle {r['idle']:6.1f} MB, after {args.first} cycles "
            f"{r['first']:6.1f} MB, after {args.cycles} {r['after']:6.1f} MB: growth "
            f"{growth:+.1f} MB ({share} of what the first {args.first} added; goal < "
            f"{PLATEAU_GOAL:.0f} MB: {verdict}) ({r['note']})")
    if args.first / args.rate < TIMERS:
        text += (f"\n  (the first part lasted {args.first / args.rate:.0f} s, less than the "
                 f"{TIMERS:.0f} s a call's transactions wait: it never reached the steady "
                 f"state of calls in flight that the long part did; --rate "
                 f"{int(args.first / (TIMERS + 8))} or less measures growth past it)")
    return text


def line(label, r, late):
    s = (f"  {label:9s} idle {r['idle']:6.1f} MB   peak {r['peak']:+7.1f} MB   "
         f"+5 s {r['settled']:+7.1f} MB")
    if late:
        s += f"   +40 s {r['late']:+7.1f} MB"
    return s + f"   ({r['seconds']:.1f} s; {r['note']})"


def ratio(a, b):
    return f"{a / b:.2f}" if b > 0.5 else "n/a (reference below 0.5 MB)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", help="another checkout to measure as the reference "
                                   "(run with PYTHONPATH=TREE)")
    ap.add_argument("--only", choices=LOADS, action="append", help="run only this load")
    ap.add_argument("--cycles", type=int, default=20000, help="churn, plateau: join+leave cycles")
    ap.add_argument("--first", type=int, default=5000,
                    help="plateau: the cycles after which the baseline is taken")
    ap.add_argument("--rate", type=int, default=None,
                    help="churn, plateau: cycles per second (SIPp -r; default 500 for churn, "
                         f"{PLATEAU_RATE} for plateau)")
    ap.add_argument("--limit", type=int, default=200, help="churn: calls outstanding (SIPp -l)")
    ap.add_argument("--invites", type=int, default=20000, help="flood: INVITEs")
    ap.add_argument("--flood-rate", type=int, default=2000, help="flood: INVITEs per second")
    ap.add_argument("--late", action="store_true",
                    help="also wait for the +40 s figure (every transaction timer fired)")
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("needs sipp (Debian package sip-tester; see scripts/test)")
    loads = [x for x in LOADS if x in (args.only or DEFAULT_LOADS)]
    if args.rate is None:
        args.rate = PLATEAU_RATE if loads == ["plateau"] else 500
    if "plateau" in loads and args.cycles <= args.first:
        sys.exit("plateau: --cycles must be more than --first")
    trees = [("this", None)]
    if args.tree:
        tree = os.path.abspath(args.tree)
        if not os.path.isdir(os.path.join(tree, "twisted_mfocus")):
            sys.exit(f"{tree} is not a checkout of mfocus (no twisted_mfocus/)")
        trees.append(("reference", tree))
    work = tempfile.mkdtemp(prefix="memory-bench-")
    where = "focus on core 1, load on core 0" if pinning() else "NOT pinned"
    print(f"memory under abuse; {where}; logs in {work}", flush=True)
    for label, tree in trees:
        print(f"  {label}: {module_file(tree or ROOT)}", flush=True)
    results = {}
    for load in loads:
        what = {"churn": f"{args.cycles} join+leave cycles at {args.rate}/s "
                         f"(SIPp, -l {args.limit})",
                "flood": f"{args.invites} INVITEs never ACKed at {args.flood_rate}/s "
                         f"from one socket",
                "plateau": f"{args.first} then {args.cycles - args.first} more join+leave "
                           f"cycles at {args.rate}/s, RSS {LATE:.0f} s after each"}[load]
        print(f"{load}: {what}", flush=True)
        for label, tree in trees:
            d = os.path.join(work, f"{load}-{label}")
            os.makedirs(d)
            try:
                if load == "plateau":
                    results[load, label] = r = plateau(tree, args, d)
                    print(plateau_line(label, r, args), flush=True)
                    continue
                results[load, label] = r = measure(load, tree, args, d)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                print(f"  {label:9s} FAILED: {e}", flush=True)
                continue
            print(line(label, r, args.late), flush=True)
        if load != "plateau" and (load, "this") in results and (load, "reference") in results:
            a, b = results[load, "this"], results[load, "reference"]
            s = (f"  this/reference: peak {ratio(a['peak'], b['peak'])}, "
                 f"+5 s {ratio(a['settled'], b['settled'])}")
            if args.late:
                s += f", +40 s {ratio(a['late'], b['late'])}"
            print(s, flush=True)
    return 0 if len(results) == len(loads) * len(trees) else 1


if __name__ == "__main__":
    sys.exit(main())
