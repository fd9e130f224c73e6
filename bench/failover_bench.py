"""kill -9 of a focus holding M members: how long until every orphan is
re-homed (issue 5), for M = 50 and 200, median and worst of several runs.

One run is tests/test_failover.py's
test_kill_9_secondary_orphans_are_taken_over_by_one_survivor, scaled up
and timed.  Three real ``twistd mfocus`` (``[multifocus] headroom = 1``,
detection on the defaults: OPTIONS keep-alive every 1 s, 3 misses), all
peers of each other:

* ``primary``, capacity M: members dial it, it fills first, then hands
  calls over (REFER, the taker INVITEs the member with Replaces);
* ``victim``, a secondary of capacity M: the primary's first peer, so it
  is recruited first and filled next;
* ``spare``, a secondary of capacity 2M+10: recruited when the victim is
  full, so it holds the few members beyond 2M and has room for all the
  orphans.  Its SIP port is chosen so that it, not the full primary, is
  the successor (the lowest focus id among the survivors):
  ``--successor primary`` swaps that, the orphans then land on the full
  primary beyond its capacity and it spreads the surplus afterwards.

Members dial the primary at ``--rate`` per second
(tests/sipp/member_dialin.xml, Contact pointing at a member_handover.xml
SIPp that answers every INVITE a focus sends the members, the successor's
re-INVITEs with Replaces included) and hold for the whole run, in two
waves: 2M (the primary fills, then the victim; the spare is recruited
when the victim is full), then 5 more once all APIs agree, which go to
the spare.  (In one wave the first member beyond 2M could be refused 486 by
the full primary while the victim was still recruiting the spare; each
wave has its own handover SIPp so that the members' Contacts differ.)
When every API agrees that all 2M+5 are connected, the victim is killed
(SIGKILL, t0) and the bench polls both survivors' full view
(GET /api/v1/conferences/bench) every 50 ms:

* kill -> detect: the first poll where some survivor no longer lists the
  victim among its foci (a focus claimed down is not listed, and its
  members drop out of the view until re-homed);
* detect -> re-homed: from there to the first poll where both survivors
  show the same view (tests.foci.shared_view) with every member connected,
  each exactly once, none held by the victim and the victim not listed;
* kill -> re-homed: the sum.
Both ends are poll times: detect -> re-homed has a 50 ms resolution (one
poll round of two full views takes a few ms and is printed).  Log lines
only have 1 s resolution, so they are cross-checks only: which focus
logged "focus ... failed (epoch" and which one "taking over N members of"
(N must be the orphans the API showed).  The members' side: from the
handover SIPps' logs, how many of the victim's calls were replaced
(INVITE with Replaces) and by whom (each exactly once, by the successor),
and from their -trace_msg the wall-clock times of the 200 OKs to those
INVITEs: kill -> last orphan's 200 OK, independent of the polling, the
re-INVITE burst (first -> last of those 200 OKs) and the lag from the
last 200 OK to all APIs agreeing (state propagation between the foci).

Every size is run ``--runs`` times; median and worst of each figure, the
scaling ratios (detect -> re-homed median, and re-INVITE burst median, of
the largest size over those of the smallest), and the goal: detect -> re-homed median under 5 s for 200
members.  Foci are pinned to core 1, SIPp and this poller to core 0 (as in
multifocus_bench.py).  The machine is shared: compare ratios and medians,
not single times.  Exit 1 when a run failed (members missing, no
agreement before or after the kill), 2 when all worked but the goal was
missed.

    python bench/failover_bench.py [--members 50,200] [--runs 3] [--rate 50]
                                   [--successor spare|primary] [--quick]
"""

import argparse
import collections
import os
import re
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

from tests.foci import Node, shared_view, stop_all, wait_agreement  # noqa: E402
from tests.harness import NO_SOURCE_LIMITS, SILENT_MEMBERS, Sipp  # noqa: E402
from tests.test_failover import calls_of, replaced_by  # noqa: E402

CONF = "bench"
GOAL = 5.0              # detect -> re-homed, seconds, for GOAL_MEMBERS
GOAL_MEMBERS = 200
EXTRA = 5               # members beyond 2M: they go to the spare focus
POLL = 0.05
PINNED = bool(shutil.which("taskset")) and (os.cpu_count() or 1) > 1


def on_core(core):
    """Children started next inherit this affinity (foci core 1, load core 0)."""
    if PINNED:
        os.sched_setaffinity(0, {core})


def view_of(node):
    try:
        return shared_view(node.conference(CONF))
    except OSError:
        return None


def everyone_once(view, n, gone):
    """n members connected, each once, none on ``gone`` which is not listed."""
    if view is None:
        return False
    members, foci = view
    users = collections.Counter(m[0] for m in members)
    return (len(users) == n and set(users.values()) == {1}
            and all(m[3] == "connected" for m in members)
            and not any(m[2] == gone for m in members)
            and not any(f[0] == gone for f in foci))


TRACE_HEAD = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d+)\n", re.M)


def answered_replacing(uas, calls):
    """{replaced call: wall-clock time the member sent 200 OK to the INVITE
    replacing it}, from the handover SIPp's -trace_msg (local time, us)."""
    path = [os.path.join(uas.cwd, f) for f in os.listdir(uas.cwd) if f.endswith("_messages.log")]
    if not path:
        return {}
    with open(path[0], errors="replace") as f:
        text = f.read()
    parts = TRACE_HEAD.split(text)
    new_for, out = {}, {}
    for i in range(1, len(parts) - 2, 3):
        stamp = time.mktime(time.strptime(parts[i], "%Y-%m-%d %H:%M:%S")) + float(parts[i + 1])
        kind, _, msg = parts[i + 2].partition("\n")
        head = msg.lstrip("\n").split("\n\n", 1)[0]
        hdr = {}
        for line in head.split("\n")[1:]:
            key, _, value = line.partition(":")
            hdr.setdefault(key.strip().lower(), value.strip())
        call = hdr.get("call-id")
        if " received " in kind and head.startswith("INVITE ") and "replaces" in hdr:
            old = hdr["replaces"].split(";", 1)[0].strip()
            if old in calls:
                new_for[call] = old
        elif " sent " in kind and head.startswith("SIP/2.0 200") and call in new_for and \
                hdr.get("cseq", "").endswith("INVITE"):
            out.setdefault(new_for[call], stamp)
    return out


def log_lines(node, pattern):
    with open(node.process.log_path, errors="replace") as f:
        return [line.rstrip() for line in f if re.search(pattern, line)]


def trouble(nodes, limit=6):
    pat = re.compile(r"error|traceback|exception|refus|exhaust|timeout|gave up|lost", re.I)
    for node in nodes:
        try:
            with open(node.process.log_path, errors="replace") as f:
                bad = [line.rstrip() for line in f if pat.search(line) and "/api/v1/" not in line]
        except OSError:
            continue
        if bad:
            print(f"      {node.name} ({node.process.log_path}): {len(bad)} such lines, e.g.")
            for line in bad[:limit]:
                print(f"        {line[:220]}")


def one_run(m, args, work):
    """Spread 2m+EXTRA members, kill -9 the victim, time the re-homing."""
    os.makedirs(work)
    n = 2 * m + EXTRA
    hold_ms = int((n / args.rate + 120) * 1000)
    res = {"ok": True, "notes": [], "work": work}
    nodes, sipps = [], []
    # SIPp: one address, and no RTP
    config = "[multifocus]\nheadroom = 1\n" + NO_SOURCE_LIMITS + SILENT_MEMBERS
    try:
        primary = Node("primary", "primary", m, work, config)
        victim = Node("victim", "secondary", m, work, config)
        spare = Node("spare", "secondary", 2 * m + 10, work, config)
        # The successor is the survivor with the lowest URI: make it the
        # one asked for (swap the two survivors' ports if needed).
        want = spare if args.successor == "spare" else primary
        other = primary if want is spare else spare
        if want.uri > other.uri:
            for attr in ("port", "http", "uri"):
                a, b = getattr(want, attr), getattr(other, attr)
                setattr(want, attr, b)
                setattr(other, attr, a)
        nodes = [primary, victim, spare]
        # Peer order = recruiting order: the primary recruits the victim first.
        primary.peers = [victim.uri, spare.uri]
        victim.peers = [primary.uri, spare.uri]
        spare.peers = [primary.uri, victim.uri]
        on_core(1)
        for node in nodes:
            node.start()
        on_core(0)
        # Two waves: 2m members fill the primary and the victim (the spare is
        # recruited when the victim is full), then EXTRA more go to the spare
        # once it is in the mesh (a newcomer arriving while the spare is
        # being recruited by the victim may be refused 486 by the primary).
        # Each wave has its own member_handover.xml SIPp: SIPp numbers the
        # calls from 1, and the Contact sip:memberN@127.0.0.1:UAS_PORT must
        # differ between members (the focus knows a member by it).
        joined = time.monotonic()
        wave = [(2 * m, "dialin", lambda v: len(v[0]) == 2 * m),
                (n, "extra", lambda v: len(v[0]) == n and len(v[1]) == 3 and
                 any(x[2] == victim.uri for x in v[0]) and any(x[2] == spare.uri for x in v[0]))]
        done, uases = 0, []
        for upto, tag, pred in wave:
            count = upto - done
            uas = Sipp("member_handover.xml", None, work, ["-set", "hold_ms", str(hold_ms)],
                       timeout=hold_ms // 1000 + 60, name=tag + "-handover")
            sipps.append(uas)
            uases.append(uas)
            uac = Sipp("member_dialin.xml", f"127.0.0.1:{primary.port}", work,
                       ["-s", CONF, "-m", str(count), "-l", str(count), "-r", str(args.rate),
                        "-set", "hold_ms", str(hold_ms), "-set", "contact_port", str(uas.port)],
                       timeout=hold_ms // 1000 + 60, name=tag)
            sipps.append(uac)
            view, _ = wait_agreement(nodes, CONF, lambda v, pred=pred: pred(v) and
                                     all(x[3] == "connected" for x in v[0]),
                                     timeout=count / args.rate * 2 + 30)
            if view is None:
                res["ok"] = False
                seen = [(len(v[0]), sum(x[3] == "connected" for x in v[0])) if v else None
                        for v in map(view_of, nodes)]
                res["notes"].append(f"before the kill: no agreement on {upto} connected members "
                                    f"((members, connected) per API: {seen}; dial-in errors "
                                    f"in {uac.cwd})")
                return res
            done = upto
        res["join_s"] = time.monotonic() - joined
        name = {x.uri: x.name for x in nodes}
        res["held"] = {name[uri]: held for uri, _, _, held in view[1]}
        orphans = sorted(x[0] for x in view[0] if x[2] == victim.uri)
        res["orphans"] = len(orphans)
        old_calls = set().union(*(calls_of(uas, victim) for uas in uases))
        survivors = [primary, spare]
        res["successor"] = min(survivors, key=lambda x: x.uri).name

        os.kill(victim.process.proc.pid, signal.SIGKILL)
        t0, wall0 = time.monotonic(), time.time()
        detect = {}
        rehomed = None
        rounds = []
        deadline = t0 + 30 + m * 0.2
        while time.monotonic() < deadline:
            r0 = time.monotonic()
            views = [view_of(node) for node in survivors]
            now = time.monotonic()
            rounds.append(now - r0)
            for node, v in zip(survivors, views):
                if node.name not in detect and v is not None and \
                        not any(f[0] == victim.uri for f in v[1]):
                    detect[node.name] = r0 - t0
            if views[0] is not None and views[0] == views[1] and \
                    everyone_once(views[0], n, victim.uri):
                rehomed = r0 - t0
                after = views[0]
                break
            time.sleep(max(0.0, POLL - (time.monotonic() - r0)))
        res["poll_round"] = statistics.median(rounds) if rounds else None
        if not detect:
            res["ok"] = False
            res["notes"].append("no survivor ever dropped the victim from its foci")
        else:
            res["detect"] = min(detect.values())
            res["detect_by"] = min(detect, key=detect.get)
            res["detect_each"] = detect
        if rehomed is None:
            res["ok"] = False
            last = [view_of(node) for node in survivors]
            res["notes"].append(
                "orphans not re-homed (all survivors agreeing, everyone connected once) within "
                f"{deadline - t0:.0f} s; survivors show: " + "; ".join(
                    f"{node.name}: {len(v[0])} members, "
                    f"{sum(x[3] == 'connected' for x in v[0])} connected, "
                    f"{sum(x[2] == victim.uri for x in v[0])} on the victim, foci "
                    f"{[(f[0][-5:], f[3]) for f in v[1]]}" if v else f"{node.name}: no view"
                    for node, v in zip(survivors, last)))
        else:
            res["rehomed"] = rehomed
            res["held_after"] = {name[f[0]]: f[3] for f in after[1]}
        # Cross-checks from the logs (1 s timestamps: not used for timing).
        res["failed_lines"] = {node.name: len(log_lines(node, r"failed \(epoch"))
                               for node in survivors}
        took = {}
        for node in survivors:
            for line in log_lines(node, r"taking over \d+ members of"):
                took[node.name] = int(re.search(r"taking over (\d+) members", line).group(1))
        res["took"] = took
        if rehomed is not None:
            # Members' side: each of the victim's calls replaced once, by the successor.
            until = time.monotonic() + 5
            while True:
                moved = {}
                for uas in uases:
                    for call, by in replaced_by(uas, old_calls, survivors).items():
                        moved.setdefault(call, []).extend(by)
                if all(moved.values()) or time.monotonic() > until:
                    break
                time.sleep(0.2)
            answers = {}
            for uas in uases:
                answers.update(answered_replacing(uas, old_calls))
            if answers:
                res["last_answer"] = max(answers.values()) - wall0
                res["first_answer"] = min(answers.values()) - wall0
            res["answered"] = len(answers)
            res["calls"] = len(old_calls)
            res["replaced_once"] = sum(by == [res["successor"]] for by in moved.values())
            if len(old_calls) != len(orphans) or res["replaced_once"] != len(old_calls):
                odd = collections.Counter(tuple(by) for by in moved.values()
                                          if by != [res["successor"]])
                res["notes"].append(
                    f"members' side: {len(old_calls)} calls of the victim for {len(orphans)} "
                    f"orphans, {res['replaced_once']} replaced exactly once by "
                    f"{res['successor']}; others (replaced by): {odd.most_common(3)}")
        return res
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        res["ok"] = False
        res["notes"].append(f"error: {e}")
        return res
    finally:
        stop_all(nodes, *sipps)
        on_core(0)
        res["nodes"] = nodes


def fmt(x):
    return f"{x:.2f}" if x is not None else "n/a"


def report_run(i, m, res):
    held = ", ".join(f"{k} {v}" for k, v in res.get("held", {}).items())
    if res.get("rehomed") is not None and res.get("detect") is not None:
        print(f"  run {i}: {res.get('orphans')} orphans (members per focus before: {held}; "
              f"joined in {res['join_s']:.1f} s); kill->detect {fmt(res['detect'])} s "
              f"(first {res['detect_by']}, "
              + ", ".join(f"{k} {v:.2f}" for k, v in res["detect_each"].items())
              + f"), detect->re-homed {fmt(res['rehomed'] - res['detect'])} s, "
              f"kill->re-homed {fmt(res['rehomed'])} s")
        print(f"         successor {res['successor']} (log: took over {res.get('took')}; "
              f"'failed (epoch' lines {res.get('failed_lines')}); after: "
              + ", ".join(f"{k} {v}" for k, v in res.get("held_after", {}).items())
              + f"; members' side: {res.get('replaced_once')}/{res.get('calls')} victim calls "
              f"replaced once by the successor, 200 OKs to those INVITEs "
              f"{fmt(res.get('first_answer'))}..{fmt(res.get('last_answer'))} s after the kill "
              f"({res.get('answered')} traced; all APIs agreed "
              f"{fmt(lag(res))} s after the last); one poll round "
              f"{res['poll_round'] * 1000:.0f} ms")
    else:
        print(f"  run {i}: FAILED ({res.get('orphans')} orphans; before: {held}; "
              f"kill->detect {fmt(res.get('detect'))} s)")
    if res.get("took") is not None and res.get("orphans") is not None and \
            sum(res["took"].values()) != res["orphans"] and res.get("rehomed") is not None:
        res["notes"].append(f"log says {res['took']} taken over, the API showed "
                            f"{res['orphans']} orphans")
    for note in res["notes"]:
        print(f"    PROBLEM: {note}")
    if not res["ok"]:
        print(f"    logs: {res['work']}")
        trouble(res.get("nodes", []))
    sys.stdout.flush()


def lag(res):
    """Last orphan's 200 OK (members' side) -> all APIs agree (the poll)."""
    if res.get("last_answer") is None or res.get("rehomed") is None:
        return None
    return res["rehomed"] - res["last_answer"]


def burst(res):
    """First -> last orphan's 200 OK: how long the re-INVITEs took."""
    if res.get("last_answer") is None:
        return None
    return res["last_answer"] - res["first_answer"]


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"median {statistics.median(values):.2f} s, worst {max(values):.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", default="50,200",
                    help="members on the victim, comma separated (default 50,200)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=50, help="joins offered per second")
    ap.add_argument("--successor", choices=("spare", "primary"), default="spare",
                    help="which survivor takes the orphans over: the spare focus with room "
                         "(default) or the full primary (then it spreads the surplus)")
    ap.add_argument("--quick", action="store_true", help="members 20,50, 2 runs")
    args = ap.parse_args()
    sizes = [int(x) for x in args.members.split(",") if x.strip()]
    if args.quick:
        sizes, args.runs = [20, 50], 2
    if not shutil.which("sipp"):
        sys.exit("needs sipp (Debian package sip-tester)")
    work = tempfile.mkdtemp(prefix="failover-bench-")
    where = "foci on core 1, SIPp and the poller on core 0" if PINNED else "NOT pinned"
    print(f"kill -9 of a focus holding M members, M in {sizes}, {args.runs} runs each; "
          f"joins at {args.rate}/s; successor: {args.successor}; {where}; "
          f"logs in {work}", flush=True)
    ok, medians = True, {}
    for m in sizes:
        print(f"M = {m} (2M+{EXTRA} = {2 * m + EXTRA} members; capacities primary {m}, "
              f"victim {m}, spare {2 * m + 10}):", flush=True)
        results = []
        for i in range(1, args.runs + 1):
            res = one_run(m, args, os.path.join(work, f"m{m}-run{i}"))
            report_run(i, m, res)
            ok = ok and res["ok"]
            results.append(res)
            time.sleep(1.0)
        good = [r for r in results if r.get("rehomed") is not None and r.get("detect") is not None]
        det = [r["detect"] for r in good]
        reh = [r["rehomed"] - r["detect"] for r in good]
        tot = [r["rehomed"] for r in good]
        print(f"  M = {m}, {len(good)}/{len(results)} runs complete, orphans "
              f"{sorted(r.get('orphans') for r in results if r.get('orphans') is not None)}:")
        print(f"    kill -> detect:     {summary(det)}")
        print(f"    detect -> re-homed: {summary(reh)}")
        print(f"    kill -> re-homed:   {summary(tot)}")
        print(f"    kill -> last orphan's 200 OK (members' side, SIPp trace): "
              f"{summary([r.get('last_answer') for r in good])}")
        print(f"    first -> last orphan's 200 OK (the re-INVITE burst): "
              f"{summary([burst(r) for r in good])}")
        print(f"    last orphan's 200 OK -> all APIs agree: "
              f"{summary([lag(r) for r in good])}", flush=True)
        if reh:
            bursts = [burst(r) for r in good if burst(r) is not None]
            medians[m] = (statistics.median(reh),
                          statistics.median([r["orphans"] for r in good]),
                          statistics.median(bursts) if bursts else None)
    if len(medians) >= 2:
        lo, hi = min(medians), max(medians)
        if medians[lo][0] > 0:
            coarse = medians[lo][0] <= 3 * POLL
            print(f"scaling ratio detect->re-homed, M={hi} / M={lo}: "
                  f"{medians[hi][0] / medians[lo][0]:.2f} "
                  f"(orphans ratio {medians[hi][1] / max(medians[lo][1], 1):.2f})"
                  + (f"; M={lo}'s median is within 3 polls ({POLL * 1000:.0f} ms each): "
                     f"the ratio is coarse" if coarse else ""))
        if medians[lo][2] and medians[hi][2]:
            print(f"scaling ratio of the re-INVITE burst (first -> last 200 OK), "
                  f"M={hi} / M={lo}: {medians[hi][2] / medians[lo][2]:.2f}")
    goal_met = None
    if GOAL_MEMBERS in medians:
        goal_met = medians[GOAL_MEMBERS][0] < GOAL
        print(f"goal: detect->re-homed median < {GOAL:.0f} s for {GOAL_MEMBERS} members: "
              f"{medians[GOAL_MEMBERS][0]:.2f} s, {'met' if goal_met else 'MISSED'}")
    else:
        print(f"goal ({GOAL_MEMBERS} members): not measured in this invocation")
    if not ok:
        return 1
    return 2 if goal_met is False else 0


if __name__ == "__main__":
    sys.exit(main())
