"""One conference spread over several foci: join rate, agreement lag and
focus-to-focus NOTIFY bytes per join, against one focus holding everyone.

Multi-focus run: ``--foci`` real ``twistd mfocus`` (1 primary + secondaries,
capacity ceil(members/foci) each, ``headroom`` so recruiting runs ahead of
need), all peers of each other.  ``--members`` SIPp members dial the primary
at ``--rate`` per second (tests/sipp/member_dialin.xml, Contact pointing at
one member_handover.xml SIPp that takes the handover INVITEs); everyone
holds until the measurement is over, then hangs up (BYE).
Reference run, same invocation: one focus of capacity members*1.1, the same
members at the same rate.

Figures:
* joins/s from the APIs: (members-1) / (time from the first poll where some
  API shows a member to the first where every API shows them all); polled
  at 50 ms on the cheap /api/v1/conferences list (the full view of 1,000
  members would load the foci).  Cross-check: the spacing of the 200 OKs to
  the dial-in INVITEs in the capture;
* agreement: time from the last join (the last dial-in 200 OK, capture
  time) until every focus's /api/v1/conferences/NAME shows the same
  members (all connected, no focus over capacity; tests/foci.wait_agreement);
* bytes of NOTIFY (Event inet-ci-multifocus-ext) from a focus port to a
  focus port (SIP message bytes, retransmissions included) from a dumpcap
  capture on lo, per join for the joins up to 25/50/75/100 % of members;
  the bytes of full documents (subscription starts, resyncs) are also shown
  apart, since those carry the whole state by design.

Foci are pinned to core 1 in both runs (taskset semantics, as in
join_bench.py), SIPp and dumpcap to core 0.  Exit code 1 when something
failed (members missing, no agreement, a focus over capacity), 2 when it
all worked but a goal (agreement <= 2 s) was missed.

``--saturate RATES`` (e.g. 50,100,200,400) runs the multi-focus case at each
offered rate in turn, stops after the first rate with a failed call or no
agreement, and runs the single-focus reference once, at the highest clean
rate; it prints the table of rates and the saturation point: the joins per
second reached at 0 failures and the agreement time there (issue 18: 2,000
members over 10 foci).

    python bench/multifocus_bench.py [--members 1000] [--foci 5] [--rate 50] [--quick]
    python bench/multifocus_bench.py --members 2000 --foci 10 --saturate 50,100,200,400
"""

import argparse
import collections
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.foci import Node, wait_agreement  # noqa: E402
from tests.pcap import Capture, sip_messages  # noqa: E402
from tests.harness import (  # noqa: E402
    NO_SOURCE_LIMITS, SILENT_MEMBERS, Sipp, api_get, read_sipp_stats)

CONF = "bench"
SETTLE = 20.0           # seconds members hold beyond the join phase
AGREEMENT_GOAL = 2.0
PINNED = bool(shutil.which("taskset")) and (os.cpu_count() or 1) > 1


def on_core(core):
    """Children started next inherit this affinity (foci core 1, load core 0)."""
    if PINNED:
        os.sched_setaffinity(0, {core})


COMPACT = {b"i": b"call-id", b"o": b"event"}


def sip_head(payload):
    """(first line, {lower-case header: value}) of a SIP message."""
    lines = payload.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        headers.setdefault(COMPACT.get(name, name), value.strip())
    return lines[0], headers


def analyse(path, focus_ports, dialin_port, handover_port):
    """Join and handover times, focus-to-focus NOTIFYs, from one capture."""
    joins, handovers, notifies, other_f2f, refused, moved = {}, {}, [], 0, {}, {}
    for t, sport, dport, payload in sip_messages(path):
        first, hdr = sip_head(payload)
        cseq = hdr.get(b"cseq", b"").split()[-1:]
        if first.startswith(b"SIP/2.0 2") and cseq == [b"INVITE"]:
            if sport in focus_ports and dport == dialin_port:
                joins.setdefault(hdr.get(b"call-id"), t)
            elif sport == handover_port and dport in focus_ports:
                handovers.setdefault(hdr.get(b"call-id"), t)
                moved.setdefault(hdr.get(b"call-id"), dport)
        elif first[:9] in (b"SIP/2.0 3", b"SIP/2.0 4", b"SIP/2.0 5", b"SIP/2.0 6") and cseq == [b"INVITE"] and sport in focus_ports \
                and dport == dialin_port:
            refused.setdefault(hdr.get(b"call-id"), first[8:].decode(errors="replace"))
        elif first.startswith(b"NOTIFY ") and hdr.get(b"event", b"").startswith(
                b"inet-ci-multifocus-ext"):
            # Only foci subscribe to this package; over TCP the sending port
            # is an ephemeral one, so the event, not the ports, says f2f.
            root = re.search(rb'<conference-info[^>]*\bstate="(\w+)"', payload)
            notifies.append((t, len(payload), bool(root) and root.group(1) == b"full"))
        elif sport in focus_ports and dport in focus_ports:
            other_f2f += len(payload)
    return {"joins": sorted(joins.values()), "handovers": sorted(handovers.values()),
            "notifies": notifies, "other_f2f": other_f2f,
            "refused": collections.Counter(refused.values()),
            "moved_to": collections.Counter(moved.values()),
            "fragments": sip_messages.fragments}


def counts(nodes):
    """Members each focus's conference list shows (the cheap call)."""
    out = []
    for node in nodes:
        try:
            status, body = api_get(node.http, "/api/v1/conferences")
        except OSError:
            status, body = None, None
        row = [c for c in (body or []) if c["name"] == CONF] if status == 200 else []
        out.append(row[0]["members"] if row else 0)
    return out


def mfocus_trouble(nodes, limit=6):
    """Log lines of each focus that look like trouble, for the report."""
    pat = re.compile(r"error|traceback|exception|fail|refus|full|exhaust|timeout|too large"
                     r"|gave up|lost|ended", re.I)
    for node in nodes:
        with open(node.process.log_path, errors="replace") as f:
            bad = [line.rstrip() for line in f if pat.search(line) and "/api/v1/" not in line
                   and "shutting down" not in line and "503 Shutting Down" not in line]
        if bad:
            print(f"    {node.name} ({node.process.log_path}): {len(bad)} such lines, e.g.")
            for line in bad[:limit]:
                print(f"      {line[:220]}")


def run(label, specs, config, args, work):
    """Start the foci, join everyone, measure, let everyone leave; a result dict."""
    os.makedirs(work)
    n, rate = args.members, args.rate
    hold_ms = int((n / rate + SETTLE) * 1000)
    res = {"ok": True, "notes": []}
    nodes, sipps, cap = [], [], None
    try:
        on_core(1)
        nodes = [Node(name, role, c, work,      # SIPp: one address, and no RTP
                      config + NO_SOURCE_LIMITS + SILENT_MEMBERS)
                 for name, role, c in specs]
        for node in nodes:
            node.peers = [o.uri for o in nodes if o is not node]
            node.start()
        on_core(0)
        ports = {node.port for node in nodes}
        cap = Capture(os.path.join(work, "sip.pcap"), sorted(ports))
        uas = Sipp("member_handover.xml", None, work, ["-set", "hold_ms", str(hold_ms)],
                   timeout=int(3 * n / rate + SETTLE + 60))
        stat = os.path.join(work, "dialin-stat.csv")
        uac = Sipp("member_dialin.xml", f"127.0.0.1:{nodes[0].port}", work,
                   ["-s", CONF, "-m", str(n), "-l", str(n), "-r", str(rate),
                    "-set", "hold_ms", str(hold_ms), "-set", "contact_port", str(uas.port),
                    "-trace_stat", "-stf", stat, "-fd", "1"],
                   timeout=int(2 * n / rate + SETTLE + 30))
        sipps = [uac, uas]
        start = time.time()
        first = everyone = None
        seen = []
        while time.time() < start + n / rate * 1.5 + 8 and uac.proc.poll() is None:
            c = counts(nodes)
            now = time.time()
            seen.append(c)
            if first is None and max(c) > 0:
                first = now
            if min(c) >= n:
                everyone = now
                break
            time.sleep(0.05)
        res["api_rate"] = (n - 1) / (everyone - first) if everyone else None
        res["api_counts"] = seen[-1] if seen else None
        pred = (lambda v: len(v[0]) == n and all(m[3] == "connected" for m in v[0])
                and all(f[3] <= f[2] for f in v[1]))
        view, lag = wait_agreement(nodes, CONF, pred,
                                   timeout=max(2.0, start + n / rate + SETTLE - 2 - time.time()))
        res["agreed_at"] = time.time() if view else None
        res["propagation"] = lag
        t = time.time()
        views = [node.conference(CONF) for node in nodes]
        res["poll_round"] = time.time() - t
        if view:
            res["foci"] = sorted(view[1], key=lambda f: (f[1] != "primary", f[0]))
        else:
            res["ok"] = False
            res["notes"].append("no agreement on %d connected members within capacity; "
                                "what each API shows: %s" % (n, "; ".join(
                                    f"{node.name}: {len(v['members']) if v else None} members,"
                                    f" held {[(f['uri'][-5:], f['members']) for f in v['foci']]}"
                                    if v else f"{node.name}: no conference"
                                    for node, v in zip(nodes, views))))
        uac.wait()                       # everyone hangs up after hold_ms
        left = time.time()
        while time.time() < left + 20 and max(counts(nodes)) > 0:
            time.sleep(0.2)
        res["after_leave"] = counts(nodes)
        if max(res["after_leave"]) > 0:
            res["ok"] = False
            res["notes"].append(f"after every member hung up the APIs still show "
                                f"{res['after_leave']} members")
        stats = read_sipp_stats(stat) if os.path.exists(stat) else {}
        res["sipp"] = (stats.get("SuccessfulCall(C)"), stats.get("FailedCall(C)"))
        if res["sipp"] != (n, 0):
            res["ok"] = False
            res["notes"].append(f"dial-in SIPp: {res['sipp'][0]} successful, {res['sipp'][1]} "
                                f"failed calls of {n} (errors: {uac.cwd})")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        res["ok"] = False
        res["notes"].append(f"error: {e}")
    finally:
        for sipp in sipps:
            sipp.kill()
        res["capture"] = cap.stop() if cap else (None, None)
        for node in nodes:
            node.stop()
        on_core(0)
    if cap and sipps:
        res.update(analyse(cap.path, ports, sipps[0].port, sipps[1].port))
        j = res["joins"]
        res["pcap_rate"] = (len(j) - 1) / (j[-1] - j[0]) if len(j) > 1 else None
        if len(j) < n:
            res["ok"] = False
            res["notes"].append(f"only {len(j)} of {n} dial-in INVITEs were answered 2xx")
    res["nodes"] = nodes
    report(label, res, args)
    return res


def report(label, res, args):
    n = args.members
    print(f"{label}:")
    fmt = lambda x, f="{:.1f}": f.format(x) if x is not None else "n/a"  # noqa: E731
    print(f"  joins/s: {fmt(res.get('api_rate'))} per the APIs, {fmt(res.get('pcap_rate'))} "
          f"per the dial-in 200 OKs (offered {args.rate}/s); "
          f"{len(res.get('joins', []))}/{n} answered, {len(res.get('handovers', []))} handed over")
    if res.get("refused"):
        print("  dial-ins refused by the focus: " + ", ".join(
            f"{k} x{v}" for k, v in res["refused"].most_common()))
    joins = res.get("joins")
    if res.get("agreed_at") and joins:
        last = res["agreed_at"] - joins[-1]
        res["lag"] = last
        extra = (f", {res['agreed_at'] - res['handovers'][-1]:.2f} s after the last handover"
                 if res.get("handovers") else "")
        print(f"  agreement: all {len(res['nodes'])} APIs agree on {n} connected members "
              f"{last:.2f} s after the last join{extra} (APIs polled every 50 ms, one round of "
              f"full views takes {res['poll_round']:.2f} s; first API to all APIs "
              f"{res['propagation']:.2f} s); goal <= {AGREEMENT_GOAL:.0f} s: "
              f"{'met' if last <= AGREEMENT_GOAL else 'MISSED'}")
    notes = res.get("notifies")
    if notes and len(res["nodes"]) > 1 and len(joins or []) >= 4:
        bounds = [joins[len(joins) * q // 4 - 1] for q in (1, 2, 3)]
        bounds.append(res.get("agreed_at") or joins[-1] + 2)
        per, part, lo = [], [], 0.0
        for b in bounds:
            window = [x for x in notes if lo < x[0] <= b]
            per.append(sum(x[1] for x in window) / (len(joins) / 4))
            part.append(sum(x[1] for x in window if not x[2]) / (len(joins) / 4))
            lo = b
        marks = "/".join(str(len(joins) * q // 4) for q in (1, 2, 3, 4))
        full = [x for x in notes if x[2]]
        print(f"  focus-to-focus NOTIFY bytes per join, joins up to {marks} members: "
              + " / ".join(f"{x:.0f}" for x in per)
              + "; partial documents only: " + " / ".join(f"{x:.0f}" for x in part))
        if part[1]:
            res["bytes_ratio"] = part[3] / part[1]
            print(f"    partial bytes per join, last quarter / second quarter: "
                  f"{res['bytes_ratio']:.2f} (goal: independent of the members, ~1; "
                  f"the first quarter includes recruiting the mesh)")
        print(f"    {len(notes)} NOTIFYs in all, {len(full)} full documents "
              f"({sum(x[1] for x in full)} bytes, largest {max([x[1] for x in full] or [0])}); "
              f"other focus-to-focus SIP bytes (SUBSCRIBE, REFER, responses...): "
              f"{res['other_f2f']}")
    if res.get("foci"):
        name = {node.uri: node.name for node in res["nodes"]}
        print("  members per focus (held/capacity): " + ", ".join(
            f"{name.get(uri, uri)} {held}/{cap}" for uri, _, cap, held in res["foci"]))
    if res.get("moved_to"):
        port = {node.port: node.name for node in res["nodes"]}
        print("  handovers answered per focus: " + ", ".join(
            f"{port.get(p, p)} {c}" for p, c in sorted(res["moved_to"].items())))
    received, dropped = res.get("capture", (None, None))
    print(f"  capture: {received} packets, {dropped} dropped, "
          f"{res.get('fragments', 0)} IP fragments (not counted)")
    if dropped or res.get("fragments"):
        res["notes"].append("the capture lost packets or saw IP fragments: bytes are low bounds")
    print(f"  after everyone hung up the APIs show {res.get('after_leave')} members")
    for note in res["notes"]:
        print(f"  PROBLEM: {note}")
    if not res["ok"] and res.get("nodes"):
        mfocus_trouble(res["nodes"])
    sys.stdout.flush()


def single_focus(args, conf, work):
    """The reference: one focus of capacity members*1.1, the same members."""
    cap = math.ceil(args.members * 1.1)
    return run(f"single focus, capacity {cap}, offered {args.rate}/s",
               [("single", "primary", cap)], conf(False), args, work)


def at_rate(args, rate):
    """``args`` with another offered rate."""
    return argparse.Namespace(**dict(vars(args), rate=rate))


def saturate(args, label, specs, conf, work):
    """The multi-focus case at rising offered rates until one fails; the
    single focus at the highest clean one."""
    rows, clean = [], None
    for rate in [int(r) for r in args.saturate.split(",")]:
        res = run(f"{label}, offered {rate}/s", specs, conf(True), at_rate(args, rate),
                  os.path.join(work, f"multi-{rate}"))
        rows.append((rate, res))
        if not res["ok"]:
            break
        clean = (rate, res)
    print("\noffered/s  joins/s (APIs)  joins/s (200 OKs)  failed  agreement s  ok")
    fmt = lambda x: f"{x:.1f}" if x is not None else "n/a"  # noqa: E731
    for rate, res in rows:
        failed = (res.get("sipp") or (None, None))[1]
        print(f"{rate:9d}  {fmt(res.get('api_rate')):>14}  {fmt(res.get('pcap_rate')):>17}  "
              f"{failed!s:>6}  {fmt(res.get('lag')):>11}  {'yes' if res['ok'] else 'NO'}")
    if clean is None:
        print("saturation: no offered rate ran clean")
        return 1
    rate, res = clean
    single = single_focus(at_rate(args, rate), conf, os.path.join(work, f"single-{rate}"))
    a, b = res.get("api_rate"), single.get("api_rate")
    print(f"saturation: {args.members} members over {args.foci} foci ran clean up to "
          f"{rate}/s offered: {fmt(a)} joins/s per the APIs at 0 failures, every API agreeing "
          f"{fmt(res.get('lag'))} s after the last join; single focus at the same rate "
          f"{fmt(b)} joins/s (ratio multi/single " + (f"{a / b:.2f})" if a and b else "n/a)"))
    return 0 if res.get("lag", 99) <= AGREEMENT_GOAL else 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--foci", type=int, default=5)
    ap.add_argument("--rate", type=int, default=50, help="joins offered per second")
    ap.add_argument("--headroom", type=int, default=None,
                    help="[multifocus] headroom (default: the whole pool, so every focus is "
                         "recruited at the first join and the mesh is the same size in every "
                         "quarter of the run)")
    ap.add_argument("--quick", action="store_true", help="200 members, capacities 40")
    ap.add_argument("--saturate", metavar="RATES",
                    help="comma-separated offered rates, run in turn until one fails")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra mfocus.conf setting for every focus (printed in the header)")
    args = ap.parse_args()
    if args.quick:
        args.members = 200
    for tool in ("sipp", "dumpcap"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool} (Debian packages sip-tester, tshark)")
    n, cap = args.members, math.ceil(args.members / args.foci)
    if args.headroom is None:
        args.headroom = cap * (args.foci - 1) + 1
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        extra.setdefault(section, []).append(f"{name} = {value}")
    extra.setdefault("multifocus", []).insert(0, f"headroom = {args.headroom}")
    conf = lambda keep: "".join(f"[{sec}]\n" + "".join(f"{x}\n" for x in lines)  # noqa: E731
                                for sec, lines in extra.items() if keep or sec != "multifocus")
    work = tempfile.mkdtemp(prefix="multifocus-bench-")
    where = "foci on core 1, SIPp and dumpcap on core 0" if PINNED else "NOT pinned"
    print(f"{n} members at {args.rate}/s; {where}; settings: headroom {args.headroom} "
          f"{' '.join(args.set)}; logs in {work}", flush=True)
    specs = [("primary", "primary", cap)] + [(f"s{i}", "secondary", cap)
                                             for i in range(1, args.foci)]
    label = f"{args.foci} foci, capacity {cap} each, headroom {args.headroom}"
    if args.saturate:
        return saturate(args, label, specs, conf, work)
    multi = run(label, specs, conf(True), args, os.path.join(work, "multi"))
    single = single_focus(args, conf, os.path.join(work, "single"))
    for key, what in (("api_rate", "per the APIs"), ("pcap_rate", "per the 200 OKs")):
        a, b = multi.get(key), single.get(key)
        print(f"ratio joins/s multi/single ({what}): " + (f"{a / b:.2f}" if a and b else "n/a"))
    if not (multi["ok"] and single["ok"]):
        return 1
    return 0 if multi.get("lag", 99) <= AGREEMENT_GOAL else 2


if __name__ == "__main__":
    sys.exit(main())
