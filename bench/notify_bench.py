"""NOTIFY bytes per join: partial state grows like N, full state like N².

A conference of N members, each also subscribed to it (RFC 4575); one more
member joins.  The figure is the bytes of the NOTIFYs that join causes, in
total and per subscriber, next to the reference: what full-state NOTIFYs
would have cost (the same N subscribers each sent the whole document).
The focus runs in-process on a ``task.Clock`` with an in-memory wire
(tests/focusrig.py), so the bytes are exactly what would go on the wire.
(No timing here: ``task.Clock`` re-sorts its call list on every callLater,
which would swamp the focus's own cost; the join bench measures speed.)

    python bench/notify_bench.py [--sizes 10,100,500] [--rounds 3]
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.focusrig import Phone, ROOM, answer, join, make_rig  # noqa: E402
from tests.harness import NO_SOURCE_LIMITS  # noqa: E402
from twisted_mfocus.conference import info  # noqa: E402


def conference_of(n):
    """A rig whose room has n members, each subscribed; NOTIFYs answered."""
    rig = make_rig(capacity=n + 10, notify_interval=0.2,       # every phone on 127.0.0.1
                   config_text="[room:room]\n" + NO_SOURCE_LIMITS)
    phones = []
    for i in range(n):
        phone = Phone(10000 + i)
        join(rig, phone)
        rig.deliver(phone.request("SUBSCRIBE", ROOM, headers=[
            ("Event", "conference"), ("Expires", "3600")]), phone.peer)
        phones.append(phone)
    rig.clock.advance(1)
    settle(rig, phones)
    return rig, phones


def settle(rig, phones):
    """Every phone answers what the focus sent it; returns those NOTIFYs."""
    by_port = {p.port: p for p in phones}
    notifies = []
    for message, peer in list(rig.wire.sent):
        if getattr(message, "method", None) == "NOTIFY":
            notifies.append(message)
            answer(rig, [message], by_port[peer.port].peer)
    rig.wire.sent.clear()
    return notifies


def one_join(rig, phones, port):
    join(rig, Phone(port))
    rig.wire.take(200)
    rig.clock.advance(0.3)              # the coalescing interval passes: flush
    return settle(rig, phones)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'N':>5} {'NOTIFYs':>8} {'bytes/join':>11} {'bytes/sub':>10} "
          f"{'full-state ref':>15} {'ratio':>7} {'bytes/join vs N=first':>22}")
    first = None
    for n in sizes:
        rig, phones = conference_of(n)
        sizes_, full = [], []
        for r in range(args.rounds):
            notifies = one_join(rig, phones, 20000 + r)
            assert len(notifies) == n, (len(notifies), n)
            assert all(b'state="partial"' in m.body for m in notifies)
            sizes_.append(sum(len(m.to_bytes()) for m in notifies))
            conference = rig.focus.rooms.get("room").conference
            full.append(n * (len(notifies[0].to_bytes()) - len(notifies[0].body)
                             + len(info.full_document(conference, 1))))
        total = statistics.median(sizes_)
        ref = statistics.median(full)
        first = first or (n, total)
        print(f"{n:>5} {n:>8} {total:>11.0f} {total / n:>10.0f} {ref:>15.0f} "
              f"{total / ref:>7.3f} {total / first[1]:>13.1f}x for {n / first[0]:.0f}x N")


if __name__ == "__main__":
    main()
