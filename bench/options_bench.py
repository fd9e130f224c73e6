"""OPTIONS answered per second by ``twistd mfocus`` under a SIPp load.

Closed loop: SIPp keeps a fixed number of OPTIONS outstanding (``-l``) at an
unbounded rate, so the rate measured is what the server sustains, and every
call must succeed (0 failed, 0 retransmissions needed).  The server is
pinned to one core and SIPp to the other when ``taskset`` exists.  In the
same run the canned responder (bench/canned_responder.py: no parsing, no
transactions) sets the ceiling; the figure printed is the median over
rounds and its ratio to the ceiling's median.

    python bench/options_bench.py [--calls 20000] [--rounds 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.harness import (  # noqa: E402
    NO_SOURCE_LIMITS, Focus, free_port, read_sipp_stats, udp_options, write_config)

SCENARIO = os.path.join(os.path.dirname(HERE), "tests", "sipp", "options_uac.xml")


def pin(core):
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() > 1 else []


def sipp_rate(port, calls, workdir, transport="u1"):
    stat = os.path.join(workdir, "stat.csv")
    if os.path.exists(stat):
        os.remove(stat)
    cmd = pin(1) + ["sipp", f"127.0.0.1:{port}", "-sf", SCENARIO, "-i", "127.0.0.1",
                    "-p", str(free_port()), "-t", transport, "-m", str(calls), "-l", "100",
                    "-r", "100000", "-nostdin", "-trace_stat", "-stf", stat, "-fd", "1",
                    "-timeout", "120s", "-timeout_error"]
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, timeout=150).returncode
    elapsed = time.perf_counter() - t0
    stats = read_sipp_stats(stat)
    failed = stats["FailedCall(C)"]
    ok = stats["SuccessfulCall(C)"]
    return ok / elapsed, failed, rc


def wait_udp(port):
    for _ in range(100):
        if udp_options(port, timeout=0.2) == 200:
            return
    raise RuntimeError("server did not answer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("needs sipp (Debian package sip-tester)")
    work = tempfile.mkdtemp(prefix="options-bench-")
    ours, ceiling = [], []
    for _ in range(args.rounds):
        port = free_port()
        ref = subprocess.Popen(pin(0) + [sys.executable, os.path.join(HERE, "canned_responder.py"),
                                         str(port)])
        try:
            wait_udp(port)
            rate, failed, _ = sipp_rate(port, args.calls, work)
            ceiling.append(rate)
            print(f"canned responder: {rate:8.0f} OPTIONS/s, {failed} failed", flush=True)
        finally:
            ref.terminate()
            ref.wait()
        port = free_port()
        focus = Focus(["--listen", f"udp:127.0.0.1:{port}",    # SIPp: one address
                       "--config", write_config(work, NO_SOURCE_LIMITS)], work)
        if pin(0):
            subprocess.run(["taskset", "-pc", "0", str(focus.proc.pid)], stdout=subprocess.DEVNULL)
        try:
            focus.wait_ready(port)
            rate, failed, _ = sipp_rate(port, args.calls, work)
            if failed:
                print(f"mfocus: {failed} FAILED calls: the rate does not count", flush=True)
                rate = 0.0
            ours.append(rate)
            print(f"mfocus:           {rate:8.0f} OPTIONS/s, {failed} failed", flush=True)
        finally:
            focus.stop()
    mo, mc = statistics.median(ours), statistics.median(ceiling)
    print(f"\nmedian mfocus {mo:.0f} OPTIONS/s on one core (goal >= 5000); "
          f"ceiling {mc:.0f}/s; ratio {mo / mc:.2f}")


if __name__ == "__main__":
    main()
