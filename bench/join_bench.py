"""Conference join+leave cycles per second: mfocus against two references.

The load is SIPp in a closed loop (``-l`` calls outstanding, ``-r`` high) of
INVITE (SDP) / 200 / ACK / BYE / 200 (bench/sipp/join_leave_uac.xml).  A
figure counts only when SIPp reports 0 failed calls; the rate is SIPp's
``SuccessfulCall(C)`` over the time between its first and last statistics.

* sippy: Sippy's B2BUA (PyPI ``sippy``, ``b2bua`` console script, installed
  on first run into a venv under ~/.cache/mfocus-bench) in front of a SIPp
  UAS (bench/sipp/join_leave_uas.xml);
* kamailio: Kamailio as a record-routing stateful proxy (t_relay, one
  worker) in front of the same SIPp UAS;
* mfocus: ``twistd -n mfocus`` itself, SIPp dialing the room "bench";
* mfocus-digest: the same, the room "bench" open to its configured member
  only, so every INVITE is challenged (401) and sent again with digest
  credentials (MD5, RFC 3261 §22; bench/sipp/join_leave_auth_uac.xml);
* ceiling: the SIPp UAC straight to the SIPp UAS, both on core 0: what the
  load generator itself sustains (a server figure near it is SIPp-bound).

Every server process is pinned to core 1 and SIPp (UAC and UAS) to core 0
with taskset, so each figure is what one core sustains.  Each target first
gets 10 warm-up calls; when any fails, its load is not run and the bench
reports the failures.  Every process is bounded by a timeout and stopped by
its PID.

    python bench/join_bench.py [--calls 5000] [--rounds 3] [--limit 50]
                               [--only mfocus|mfocus-digest|sippy|kamailio|ceiling]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.harness import NO_SOURCE_LIMITS, TWISTD, free_port, udp_options, write_config  # noqa: E402,E501
from tests.peers import Kamailio  # noqa: E402

UAC = os.path.join(HERE, "sipp", "join_leave_uac.xml")
UAS = os.path.join(HERE, "sipp", "join_leave_uas.xml")
AUTH_UAC = os.path.join(HERE, "sipp", "join_leave_auth_uac.xml")
BENCH_USER, BENCH_PASSWORD, BENCH_REALM = "bench", "bench-password-1", "bench"
CACHE = os.environ.get("MFOCUS_BENCH_CACHE",
                       os.path.join(os.path.expanduser("~"), ".cache", "mfocus-bench"))
WARMUP = 10
TARGETS = ("ceiling", "sippy", "kamailio", "mfocus", "mfocus-digest")
MFOCUS_DIGEST_CFG = """\
[auth]
realm = {realm}
users_file = {users}
algorithms = MD5
[room:bench]
members = {user}
"""

KAMAILIO_PROXY_CFG = """\
#!KAMAILIO
# bench/join_bench.py: bare record-routing stateful proxy, one worker, to the SIPp UAS.
debug=1
log_stderror=yes
fork=yes
children=1
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=off
dns_srv_lb=no
dns_try_naptr=no
disable_tcp=yes
enable_tls=no
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"

modparam("rr", "enable_full_lr", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (is_method("OPTIONS") && !has_totag()) {{
		sl_send_reply("200", "OK");     # the bench's readiness probe
		exit;
	}}
	if (has_totag()) {{
		if (loose_route()) {{
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
	if (is_method("INVITE")) {{
		record_route();
	}}
	$du = "sip:127.0.0.1:{uas_port}";
	route(RELAY);
}}

route[RELAY] {{
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}
"""


def pinning():
    return bool(shutil.which("taskset")) and (os.cpu_count() or 1) > 1


def pin(core):
    return ["taskset", "-c", str(core)] if pinning() else []


def stop(proc, grace=5.0):
    """Stop our child ``proc`` by its PID (SIGTERM, then SIGKILL)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def run_load(cmd, work, budget, stat):
    """Run the SIPp load ``cmd`` for at most ``budget`` (+30) seconds: its
    return code (or "killed") and its last statistics (None without)."""
    try:
        rc = subprocess.run(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=budget + 30).returncode
    except subprocess.TimeoutExpired:      # run() killed SIPp (its own child)
        rc = "killed"
    return rc, (read_stats(stat) if os.path.exists(stat) else None)


def read_stats(path):
    """SIPp's last cumulative statistics line, plus ``elapsed``: seconds between
    StartTime and CurrentTime (their epoch parts; ElapsedTime is whole seconds)."""
    with open(path) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    if len(rows) < 2:
        return None
    stats = dict(zip(rows[0], rows[-1]))
    for key, value in stats.items():
        try:
            stats[key] = int(value)
        except ValueError:
            pass
    stats["elapsed"] = (float(stats["CurrentTime"].split("\t")[-1])
                        - float(stats["StartTime"].split("\t")[-1]))
    return stats


def sipp_load(port, calls, limit, work, tag, digest=False):
    """Run the UAC load against 127.0.0.1:``port``; return (rate, ok, failed, rc)."""
    stat = os.path.join(work, f"{tag}-stat.csv")
    if os.path.exists(stat):
        os.remove(stat)
    budget = max(60, calls // 20)        # anything slower than 20 calls/s is a failure anyway
    cmd = pin(0) + ["sipp", f"127.0.0.1:{port}", "-sf", AUTH_UAC if digest else UAC,
                    "-s", "bench",
                    "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()),
                    "-m", str(calls), "-l", str(limit), "-r", "100000",
                    "-recv_timeout", "5000", "-nostdin",
                    "-trace_stat", "-stf", stat, "-fd", "1",
                    "-timeout", f"{budget}s", "-timeout_error"]
    if digest:                           # SIPp's digest uri drops the user unless told
        cmd += ["-au", BENCH_USER, "-ap", BENCH_PASSWORD,
                "-auth_uri", f"bench@127.0.0.1:{port}"]
    if calls <= WARMUP:
        cmd += ["-trace_err", "-error_file", os.path.join(work, f"{tag}-errors.log")]
    rc, stats = run_load(cmd, work, budget, stat)
    if stats is None:
        return 0.0, 0, calls, rc
    ok, failed = stats["SuccessfulCall(C)"], stats["FailedCall(C)"]
    failed = max(failed, calls - ok)     # calls never finished count as failed
    rate = ok / stats["elapsed"] if stats["elapsed"] > 0 else 0.0
    return rate, ok, failed, rc


def start_uas(work, tag):
    port = free_port()
    log = open(os.path.join(work, f"{tag}-uas.log"), "wb")
    proc = subprocess.Popen(pin(0) + ["sipp", "-sf", UAS, "-i", "127.0.0.1", "-mi", "127.0.0.1",
                                      "-p", str(port), "-bind_local", "-nostdin"],
                            cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    time.sleep(0.3)
    if proc.poll() is not None:
        raise RuntimeError(f"SIPp UAS did not start, see {work}/{tag}-uas.log")
    return proc, port


def wait_answer(port, proc, want=None, timeout=15.0):
    """Wait until 127.0.0.1:``port`` answers an OPTIONS (with ``want`` if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        code = udp_options(port, timeout=0.3)
        if code is not None and (want is None or code == want):
            return True
    return False


def sippy_b2bua():
    """The ``b2bua`` script of a venv with PyPI sippy, created on first use."""
    venv = os.path.join(CACHE, "venv")
    b2bua = os.path.join(venv, "bin", "b2bua")
    if not os.path.exists(b2bua):
        print(f"installing sippy into {venv} ...", flush=True)
        os.makedirs(CACHE, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q",
                        "--disable-pip-version-check", "sippy"], check=True, timeout=600)
    return b2bua


class Server:
    """What one target needs running: the server under test and maybe a UAS behind it."""

    def __init__(self, name, work):
        self.name, self.work = name, work
        self.procs = []
        self.kamailio = None
        self.port = free_port()

    def start(self):
        w = self.work
        if self.name.startswith("mfocus"):
            log = open(os.path.join(w, "mfocus.log"), "wb")
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            args = ["--listen", f"udp:127.0.0.1:{self.port}"]
            if self.name == "mfocus-digest":
                args += ["--config", digest_config(w)]
            else:                       # the whole load comes from one address
                args += ["--config", write_config(w, NO_SOURCE_LIMITS)]
            proc = subprocess.Popen(pin(1) + TWISTD + ["--nodaemon", "--pidfile=", "mfocus"]
                                    + args,
                                    cwd=w, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
            log.close()
            self.procs.append(proc)
            return wait_answer(self.port, proc, want=200)
        uas, uas_port = start_uas(w, self.name)
        self.procs.append(uas)
        if self.name == "ceiling":       # SIPp UAC straight to the UAS: the load's own limit
            self.port = uas_port
            return True
        if self.name == "kamailio":
            self.kamailio = Kamailio(os.path.join(w, "kamailio"), self.port, uas_port,
                                     cfg=KAMAILIO_PROXY_CFG.format(port=self.port,
                                                                   uas_port=uas_port),
                                     cpus=1 if pinning() else None, shm_mb=256)
            self.kamailio.start()
            return True
        log = open(os.path.join(w, "sippy.log"), "wb")
        proc = subprocess.Popen(pin(1) + [sippy_b2bua(), "--foreground=on",
                                          "--sip_address=127.0.0.1", f"--sip_port={self.port}",
                                          f"--static_route=127.0.0.1:{uas_port}",
                                          "--acct_enable=off", "--auth_enable=off",
                                          f"--logfile={os.path.join(w, 'sippy-b2bua.log')}",
                                          f"--b2bua_socket=udp:127.0.0.1:{free_port()}"],
                                cwd=w, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return wait_answer(self.port, proc)

    def stop(self):
        if self.kamailio is not None:
            self.kamailio.stop()
        for proc in reversed(self.procs):
            stop(proc)


def digest_config(work):
    """A config whose room "bench" admits only BENCH_USER, by digest."""
    from twisted_mfocus.sip.auth import ha1
    users = os.path.join(work, "users")
    with open(users, "w") as f:
        f.write(f"{BENCH_USER}:{BENCH_REALM}:"
                f"{ha1(BENCH_USER, BENCH_REALM, BENCH_PASSWORD, 'MD5')}\n")
    path = os.path.join(work, "mfocus.conf")
    with open(path, "w") as f:
        f.write(MFOCUS_DIGEST_CFG.format(realm=BENCH_REALM, users=users, user=BENCH_USER)
                + NO_SOURCE_LIMITS)
    return path


LABEL = {"ceiling": "sipp->sipp", "sippy": "sippy b2bua", "kamailio": "kamailio proxy",
         "mfocus": "mfocus", "mfocus-digest": "mfocus digest"}


def one_round(name, calls, limit, work):
    """(rate or None, failed, note) for one round of one target."""
    server = Server(name, work)
    try:
        if not server.start():
            return None, 0, "did not start (no answer to OPTIONS)"
        digest = name == "mfocus-digest"
        _, ok, failed, rc = sipp_load(server.port, WARMUP, min(limit, WARMUP), work,
                                      f"{name}-warmup", digest)
        if failed:
            return None, failed, (f"failed {failed} of {WARMUP} warm-up calls (SIPp rc {rc}; "
                                  f"see {work}/{name}-warmup-errors.log)")
        rate, ok, failed, rc = sipp_load(server.port, calls, limit, work, name, digest)
        if failed:
            return None, failed, f"failed {failed} of {calls} calls (SIPp rc {rc})"
        return rate, 0, f"{ok} calls"
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return None, 0, f"error: {e}"
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=5000, help="calls per round (default 5000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--limit", type=int, default=50, help="calls outstanding (SIPp -l)")
    ap.add_argument("--only", choices=TARGETS, action="append",
                    help="run only this target (repeatable)")
    args = ap.parse_args()
    for tool in ["sipp"] + (["kamailio"] if not args.only or "kamailio" in args.only else []):
        if not shutil.which(tool):
            sys.exit(f"needs {tool} (Debian packages sip-tester, kamailio; see scripts/test)")
    targets = [t for t in TARGETS if not args.only or t in args.only]
    work = tempfile.mkdtemp(prefix="join-bench-")
    where = ("servers on core 1, SIPp on core 0" if pinning()
             else "NOT pinned (no taskset or one core)")
    print(f"join+leave cycles, {args.calls} calls x {args.rounds} rounds, {args.limit} "
          f"outstanding; {where}; logs in {work}", flush=True)
    rates = {t: [] for t in targets}
    failures = {t: [] for t in targets}
    for r in range(1, args.rounds + 1):
        for name in targets:
            d = os.path.join(work, f"r{r}-{name}")
            os.makedirs(d)
            rate, failed, note = one_round(name, args.calls, args.limit, d)
            if rate is None:
                failures[name].append((failed, note))
                print(f"round {r} {LABEL[name]:15s}: FAILED, {note}", flush=True)
            else:
                rates[name].append(rate)
                print(f"round {r} {LABEL[name]:15s}: {rate:8.0f} calls/s, 0 failed ({note})",
                      flush=True)
    print()
    median = {}
    for name in targets:
        if failures[name]:
            failed = sum(f for f, _ in failures[name])
            print(f"{name}: failed {failed} calls ({len(failures[name])} of {args.rounds} "
                  f"rounds failed; last: {failures[name][-1][1]}): no figure")
        else:
            median[name] = statistics.median(rates[name])
            print(f"{LABEL[name]:15s}: {median[name]:8.0f} join+leave calls/s (median of "
                  f"{args.rounds}; rounds {', '.join(f'{x:.0f}' for x in rates[name])}), 0 failed")
    if "mfocus" in median and "mfocus-digest" in median:
        print(f"digest cost: mfocus/mfocus-digest {median['mfocus'] / median['mfocus-digest']:.2f}x"
              " (each digest cycle is two INVITE transactions: the challenge and the call)")
    for ref in ("sippy", "kamailio"):
        if "mfocus" in targets and ref in targets:
            if "mfocus" in median and ref in median:
                print(f"ratio mfocus/{ref}: {median['mfocus'] / median[ref]:.2f}")
            else:
                print(f"ratio mfocus/{ref}: n/a (a figure is missing)")
    return 0 if len(median) == len(targets) else 1


if __name__ == "__main__":
    sys.exit(main())
