"""The replicated conference state: unit tests of Replica, then a simulation of
2-10 foci on a lossy, reordering, duplicating network (twisted's task.Clock)
showing that relaying plus snapshot refresh converge to what each focus wrote."""

import random

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet import task

from twisted_mfocus.conference.replica import (DEL, FOCUS, SET, Delta, FocusRecord,
                                               MemberRecord, Partition, Replica, Snapshot)

A, B, C = "sip:127.0.0.1:5061", "sip:127.0.0.1:5062", "sip:127.0.0.1:5063"
T0 = 1700000000.0


def member(name, holder, when=T0, **kw):
    """A member as `holder` describes it: its own dialog ids."""
    return MemberRecord(f"sip:{name}@10.0.0.9:5060", f"sip:{name}@example.com", when=when,
                        call_id=f"{name}-{holder}", local_tag=f"tag-{holder}", **kw)


def replica(uri, links=(), **kw):
    return Replica(uri, FocusRecord(uri, links=tuple(sorted(links))), **kw)


def writer_with_deltas(uri=B, count=4):
    """A writer whose first delta carries its focus record, then `count - 1` joins."""
    writer = replica(uri)
    deltas = [writer.write((FOCUS, FocusRecord(uri, capacity=10)))]
    deltas += [writer.write((SET, member(f"m{i}", uri))) for i in range(1, count)]
    return writer, deltas


# -- writing and receiving ----------------------------------------------------

def test_write_numbers_changes_and_applies_them():
    a = replica(A)
    assert a.seqs() == {A: 0} and a.foci() == [FocusRecord(A)]
    alice = member("alice", A)
    delta = a.write((SET, alice), (FOCUS, FocusRecord(A, load=1)))
    assert delta == Delta(A, 1, ((SET, alice), (FOCUS, FocusRecord(A, load=1))))
    assert a.held_by(A) == {alice.endpoint: alice}
    assert a.members() == {alice.endpoint: (A, alice)}
    assert a.write((DEL, alice.endpoint)).seq == 2
    assert a.members() == {} and a.focus(A).load == 1


@pytest.mark.parametrize("op", [("set", "not-a-record"), ("del", 5), ("bogus", "x"),
                                ("focus", FocusRecord(B)), ("set",)])
def test_a_bad_op_is_refused_and_changes_nothing(op):
    a = replica(A)
    with pytest.raises(ValueError):
        a.write((SET, member("alice", A)), op)
    assert a.seqs() == {A: 0} and a.members() == {}


@pytest.mark.parametrize("delta", [Delta(B, 0, ()), Delta(B, "1", ()),
                                   Delta(B, 1, ((FOCUS, FocusRecord(C)),)),
                                   Delta(B, 1, ((SET, member("x", B, when="noon")),))])
def test_a_malformed_delta_from_the_network_is_refused(delta):
    a = replica(A)
    with pytest.raises(ValueError):
        a.receive(delta)
    assert a.seqs() == {A: 0} and a.lagging() == set()


def test_receive_in_order_applies_each_delta():
    writer, deltas = writer_with_deltas()
    a = replica(A)
    for delta in deltas:
        assert a.receive(delta) == [delta]
    assert a.seqs() == {A: 0, B: 4}
    assert a.held_by(B) == writer.held_by(B)
    assert a.focus(B) == FocusRecord(B, capacity=10)


def test_duplicates_and_old_deltas_are_ignored():
    _, deltas = writer_with_deltas()
    a = replica(A)
    a.receive(deltas[0])
    a.receive(deltas[1])
    assert a.receive(deltas[1]) == [] and a.receive(deltas[0]) == []
    assert a.seqs()[B] == 2


def test_out_of_order_deltas_wait_then_are_released_in_order():
    writer, deltas = writer_with_deltas()
    a = replica(A)
    assert a.receive(deltas[0]) == [deltas[0]]
    assert a.receive(deltas[3]) == [] and a.receive(deltas[2]) == []
    assert a.receive(deltas[3]) == []                     # a duplicate while buffered
    assert a.lagging() == {B}
    assert a.receive(deltas[1]) == deltas[1:]
    assert a.lagging() == set() and a.view()[1:] == writer.view()


def test_a_writer_first_heard_without_its_focus_record_needs_a_snapshot():
    """Seq 1 tells the members but not the focus record at seq 0: wait for a snapshot."""
    writer = replica(B)
    first = writer.write((SET, member("alice", B)))
    a = replica(A)
    assert a.receive(first) == [] and a.lagging() == {B}
    assert a.merge(writer.snapshot())
    assert a.lagging() == set() and a.view()[1:] == writer.view()


def test_a_gap_makes_us_lag_and_a_snapshot_repairs_it():
    writer, deltas = writer_with_deltas(count=6)
    a = replica(A)
    a.receive(deltas[0])
    a.receive(deltas[4])                                  # 2, 3 and 4 lost
    a.receive(deltas[5])
    assert a.lagging() == {B}
    middle = replica(C)
    for delta in deltas[:3]:
        middle.receive(delta)
    assert a.merge(middle.snapshot())                     # B at seq 3: 4 is still missing
    assert a.lagging() == {B} and a.seqs()[B] == 3
    assert a.merge(writer.snapshot())
    assert a.lagging() == set() and a.seqs()[B] == 6
    assert a.held_by(B) == writer.held_by(B)


def test_a_snapshot_drops_covered_deltas_and_releases_the_next():
    writer, deltas = writer_with_deltas(count=6)
    behind = replica(C)
    for delta in deltas[:4]:
        behind.receive(delta)
    a = replica(A)
    a.receive(deltas[2])
    a.receive(deltas[4])
    assert a.merge(behind.snapshot())                     # seq 4: delta 3 stale, 5 follows
    assert a.seqs()[B] == 5 and a.lagging() == set()
    assert a.receive(deltas[5]) == [deltas[5]]
    assert a.held_by(B) == writer.held_by(B)


def test_our_own_deltas_echoed_back_are_ignored():
    a = replica(A)
    delta = a.write((SET, member("alice", A)))
    a.write((DEL, member("alice", A).endpoint))
    assert a.receive(delta) == [] and a.members() == {}


def test_merge_never_overwrites_our_own_partition():
    a = replica(A)
    a.write((SET, member("alice", A)))
    forged = Snapshot({A: Partition(99, FocusRecord(A, load=7), {})})
    assert a.merge(forged) is False
    assert a.seqs() == {A: 1} and len(a.held_by(A)) == 1 and a.focus(A).load == 0


def test_merge_of_an_older_snapshot_changes_nothing():
    writer, deltas = writer_with_deltas()
    old = writer.snapshot()
    writer.write((DEL, member("m1", B).endpoint))
    a = replica(A)
    assert a.merge(writer.snapshot())
    assert a.merge(old) is False and a.merge(writer.snapshot()) is False
    assert a.held_by(B) == writer.held_by(B)


def test_a_malformed_snapshot_is_refused_whole():
    a = replica(A)
    bad = Snapshot({B: Partition(3, FocusRecord(B), {}),
                    C: Partition(2, FocusRecord(C), {"sip:x@h": member("y", C)})})
    with pytest.raises(ValueError):
        a.merge(bad)
    assert a.seqs() == {A: 0}


def test_snapshots_and_views_are_copies():
    writer, _ = writer_with_deltas()
    snap = writer.snapshot()
    snap.partitions[B].members.clear()
    held = writer.held_by(B)
    held.clear()
    assert len(writer.held_by(B)) == 3
    taken = writer.snapshot()
    writer.write((SET, member("late", B)))
    assert len(taken.partitions[B].members) == 3
    a = replica(A)
    a.merge(taken)
    taken.partitions[B].members.clear()                    # the caller's dict, not ours
    assert len(a.held_by(B)) == 3


# -- the merged member view ---------------------------------------------------

@pytest.mark.parametrize("new_first", [False, True])
def test_during_a_handover_the_later_join_wins_then_the_new_holder_remains(new_first):
    old_holder, new_holder, observer = replica(A), replica(B), replica(C)
    hello = [old_holder.write((FOCUS, FocusRecord(A))), new_holder.write((FOCUS, FocusRecord(B)))]
    at_old = old_holder.write((SET, member("alice", A, when=T0)))
    at_new = new_holder.write((SET, member("alice", B, when=T0 + 5)))
    for delta in hello + ([at_new, at_old] if new_first else [at_old, at_new]):
        observer.receive(delta)
    alice_at_new = (B, member("alice", B, when=T0 + 5))
    assert observer.members() == {alice_at_new[1].endpoint: alice_at_new}
    assert len(observer.held_by(A)) == 1                    # both hold alice meanwhile
    observer.receive(old_holder.write((DEL, alice_at_new[1].endpoint)))
    assert observer.members() == {alice_at_new[1].endpoint: alice_at_new}
    assert observer.held_by(A) == {}


def test_equal_join_times_are_broken_by_the_larger_holder_uri():
    a = replica(A)
    b = replica(B)
    a.write((SET, member("alice", A, when=None)))
    b.write((SET, member("alice", B, when=0.0)))
    a.merge(b.snapshot())
    assert a.members()[member("alice", A).endpoint][0] == B


def test_a_higher_ownership_epoch_wins_over_a_later_join():
    """A record from a replaced holder, however late its clock, never wins."""
    a, b = replica(A), replica(B)
    a.write((SET, member("alice", A, when=T0 + 100)))          # a fast clock
    b.write((SET, member("alice", B, when=T0, epoch=1)))
    a.merge(b.snapshot())
    assert a.member(member("alice", A).endpoint)[0] == B


# -- failure: down claims, epochs, the successor --------------------------------

def three_foci():
    """Replicas of A, B, C that know each other's records; B holds bob."""
    reps = {uri: replica(uri) for uri in (A, B, C)}
    for uri, rep in reps.items():
        rep.write((FOCUS, FocusRecord(uri, capacity=5)))
    reps[B].write((SET, member("bob", B)))
    for rep in reps.values():
        for other in reps.values():
            if other is not rep:
                rep.merge(other.snapshot())
    return reps


def test_a_focus_claimed_down_holds_nobody_and_the_lowest_survivor_succeeds_it():
    reps = three_foci()
    a, c = reps[A], reps[C]
    bob = member("bob", B).endpoint
    assert a.member(bob)[0] == B and a.successor(B) == A
    c.write((FOCUS, FocusRecord(C, capacity=5, down=((B, 0),))))
    a.merge(c.snapshot())
    a.take_changes()
    assert a.down() == {B} and a.member(bob) is None         # an orphan now
    assert a.held_by(B) == {bob: member("bob", B)}          # its dialog, for Replaces
    assert [f.uri for f in a.live_foci()] == [A, C]
    assert a.successor(B) == c.successor(B) == A            # every replica agrees
    # A takes bob over: epoch + 1, and the member is back in every view.
    c.receive(a.write((SET, member("bob", A, epoch=1))))
    assert c.member(bob) == (A, member("bob", A, epoch=1))


def test_a_focus_back_with_a_higher_epoch_lifts_the_claim():
    reps = three_foci()
    a, b = reps[A], reps[B]
    a.write((FOCUS, FocusRecord(A, capacity=5, down=((B, 0),))))
    b.merge(a.snapshot())
    assert B in b.down() and b.claimed(B) == 0              # B sees it was replaced
    bob = member("bob", B).endpoint
    back = b.write((DEL, bob), (FOCUS, FocusRecord(B, capacity=5, epoch=1)))
    assert b.down() == frozenset()
    a.receive(back)
    assert a.down() == frozenset() and a.held_by(B) == {}
    assert a.successor(C) == A and [f.uri for f in a.live_foci()] == [A, B, C]


def test_late_deltas_of_a_down_focus_change_no_view():
    reps = three_foci()
    a, b = reps[A], reps[B]
    a.write((FOCUS, FocusRecord(A, capacity=5, down=((B, 0),))))
    a.take_changes()
    late = b.write((SET, member("carol", B)))               # B, frozen, wakes up
    a.receive(late)
    assert a.member(member("carol", B).endpoint) is None
    assert a.take_changes() == (set(), False)


def test_a_claim_holds_while_the_claimer_only_changes_its_load():
    """A record that changes load or links alone keeps the down set as it was."""
    reps = three_foci()
    a, c = reps[A], reps[C]
    c.write((FOCUS, FocusRecord(C, capacity=5, down=((B, 0),))))
    a.merge(c.snapshot())
    for load in (1, 2, 0):
        a.receive(c.write((FOCUS, FocusRecord(C, capacity=5, load=load, down=((B, 0),)))))
        assert a.down() == {B}
    a.receive(c.write((FOCUS, FocusRecord(C, capacity=5, load=1))))      # claim lifted
    assert a.down() == frozenset() and a.member(member("bob", B).endpoint)[0] == B


def test_alone_until_another_focus_is_heard_of():
    a, (b, deltas) = replica(A), writer_with_deltas(B)
    a.write((FOCUS, FocusRecord(A, load=1)))
    assert a.alone()
    a.receive(deltas[0])
    assert not a.alone()


def test_left_and_leaving_foci_are_not_successors():
    reps = three_foci()
    a = reps[A]
    a.write((FOCUS, FocusRecord(A, capacity=5, state="leaving")))
    assert a.successor(C) == B
    a.write((FOCUS, FocusRecord(A, capacity=5, state="left")))
    assert [f.uri for f in a.live_foci()] == [B, C]


def test_take_changes_reports_endpoints_and_foci_once():
    a = replica(A)
    assert a.take_changes() == (set(), False)
    alice, bob = member("alice", A), member("bob", A)
    a.write((SET, alice), (SET, bob))
    assert a.take_changes() == ({alice.endpoint, bob.endpoint}, False)
    assert a.take_changes() == (set(), False)
    a.write((SET, alice))                                   # identical record: no change
    assert a.take_changes() == (set(), False)
    b = replica(B)
    b.write((FOCUS, FocusRecord(B, load=1)))
    b.write((SET, member("alice", B, when=T0 + 1)))         # takes alice over
    b.write((SET, member("carol", B)))
    for delta in [Delta(B, 1, ((FOCUS, FocusRecord(B, load=1)),)),
                  Delta(B, 2, ((SET, member("alice", B, when=T0 + 1)),)),
                  Delta(B, 3, ((SET, member("carol", B)),))]:
        a.receive(delta)
    assert a.take_changes() == ({alice.endpoint, member("carol", B).endpoint}, True)
    a.write((SET, alice._replace(status="on-hold")))        # the loser changed: view did not
    assert a.take_changes() == (set(), False)
    a.write((DEL, bob.endpoint))
    assert a.take_changes() == ({bob.endpoint}, False)


# -- relaying -----------------------------------------------------------------

def test_relay_targets():
    d = "sip:127.0.0.1:5064"
    hub = replica(A)
    hub.merge(Snapshot({C: Partition(1, FocusRecord(C, links=(A, B)), {}),
                        d: Partition(1, FocusRecord(d, links=(A,)), {})}))
    subscribers = [d, C, B, "sip:unknown:5060"]
    own = hub.write((SET, member("alice", A)))
    assert hub.relay_targets(own, subscribers) == subscribers
    assert hub.relay_targets(own, subscribers, source=C) == [d, B, "sip:unknown:5060"]
    from_b = Delta(B, 1, ())
    # B never gets its own delta back; C subscribes to B itself; the unknown one may not.
    assert hub.relay_targets(from_b, subscribers) == [d, "sip:unknown:5060"]
    assert hub.relay_targets(from_b, subscribers, source=d) == ["sip:unknown:5060"]


def test_the_buffer_is_bounded_and_a_snapshot_repairs_what_it_dropped():
    writer, deltas = writer_with_deltas(count=10)
    a = replica(A, max_pending=3)
    for delta in deltas[1:]:                                # seq 1 lost; 2-4 kept, 5-10 dropped
        a.receive(delta)
    assert a.lagging() == {B}
    assert a.receive(deltas[0]) == deltas[:4]
    assert a.seqs()[B] == 4 and a.lagging() == {B}          # still knows it is behind
    assert a.merge(writer.snapshot())
    assert a.lagging() == set() and a.held_by(B) == writer.held_by(B)


def test_view_is_equal_exactly_when_replicas_converged():
    a, b = replica(A), replica(B)
    a.write((SET, member("alice", A)))
    assert a.view() != b.view()
    a.merge(b.snapshot())
    b.merge(a.snapshot())
    assert a.view() == b.view()
    hash(a.view())


# -- the simulation -----------------------------------------------------------

MAX_DELAY = 0.5          # network delay, seconds: reorders anything sent closer together
REFRESH = 5.0            # subscription refresh period: each subscriber asks for a snapshot
WORKLOAD = 30.0          # seconds of joins, leaves, handovers and load updates
HANDOVER_DEL = 3.0       # the old holder ends its leg within this after the new one joins


def subscriptions(shape, uris, rng):
    """uri -> the foci it subscribes to; every focus reaches every other one."""
    links = {uri: set() for uri in uris}

    def both(x, y):
        links[x].add(y)
        links[y].add(x)
    if shape == "mesh":
        for x in uris:
            links[x] = set(uris) - {x}
    elif shape == "star":
        for leaf in uris[1:]:
            both(uris[0], leaf)
    elif shape == "chain":
        for x, y in zip(uris, uris[1:]):
            both(x, y)
    elif shape == "ring":                                   # one way round: relaying only
        for x, y in zip(uris, uris[1:] + uris[:1]):
            links[x].add(y)
    else:                                                   # a random tree plus one-way extras
        for i, x in enumerate(uris[1:], 1):
            both(x, rng.choice(uris[:i]))
        for _ in range(rng.randrange(len(uris))):
            x, y = rng.sample(uris, 2)
            links[x].add(y)
    return links


class Network:
    """Delivers each message after a random delay, maybe twice, maybe never."""

    def __init__(self, clock, rng, loss, duplication):
        self.clock, self.rng, self.loss, self.duplication = clock, rng, loss, duplication

    def send(self, deliver, *args):
        for _ in range(2 if self.rng.random() < self.duplication else 1):
            if self.rng.random() >= self.loss:
                self.clock.callLater(self.rng.uniform(0.001, MAX_DELAY), deliver, *args)


class SimFocus:
    """A focus reduced to its replica, its subscriptions and what it writes (the truth)."""

    def __init__(self, sim, uri, links, make_replica):
        self.sim, self.uri, self.links = sim, uri, sorted(links)
        self.subscribers = []
        self.replica = make_replica(uri, FocusRecord(uri, capacity=50))
        self.truth_seq, self.truth_focus, self.truth_members = 0, self.replica.focus(uri), {}
        self.history = [(self.truth_focus, {})]    # seq -> what we had written by then
        self.seen_seqs = {}
        self.last_ask = None

    def write(self, *ops):
        """Our own change: apply it to the truth model and the replica, then send it."""
        for name, arg in ops:
            if name == SET:
                self.truth_members[arg.endpoint] = arg
            elif name == DEL:
                self.truth_members.pop(arg, None)
            else:
                self.truth_focus = arg
        self.truth_seq += 1
        self.history.append((self.truth_focus, dict(self.truth_members)))
        self.publish(self.replica.write(*ops), None)

    def publish(self, delta, source):
        for target in self.replica.relay_targets(delta, self.subscribers, source):
            self.sim.net.send(self.sim.foci[target].on_delta, delta, self.uri)

    def on_delta(self, delta, source):
        for i, applied in enumerate(self.replica.receive(delta)):
            self.publish(applied, source if i == 0 else None)
        self.check_prefix([delta.writer])
        if self.replica.lagging() and self.sim.anti_entropy:
            self.ask_for_snapshots()

    def ask_for_snapshots(self):
        """Refresh every subscription; when lagging, at most twice a second."""
        now = self.sim.clock.seconds()
        if self.last_ask is not None and now - self.last_ask < 0.5:
            return
        self.last_ask = now
        for link in self.links:
            self.sim.net.send(self.sim.foci[link].on_snapshot_request, self.uri)

    def on_snapshot_request(self, requester):
        self.sim.net.send(self.sim.foci[requester].on_snapshot, self.replica.snapshot())

    def on_snapshot(self, snapshot):
        self.replica.merge(snapshot)
        self.check_prefix(snapshot.partitions)

    def check_prefix(self, writers):
        """Safety at every step: our copy of a writer at seq s is exactly what it
        had written at seq s, and seqs never go back."""
        seqs = self.replica.seqs()
        for writer in writers:
            if writer not in seqs:
                continue
            seq, known = seqs[writer], self.seen_seqs.get(writer, 0)
            assert seq >= known, f"{self.uri}: {writer} went back from seq {known} to {seq}"
            self.seen_seqs[writer] = seq
            true_focus, true_members = self.sim.foci[writer].history[seq]
            got = (seq, self.replica.focus(writer), sorted_records(self.replica.held_by(writer)))
            problems = describe(self.uri, writer, got,
                                (seq, true_focus, sorted_records(true_members)))
            if problems:
                pytest.fail(f"a copy differs from what its writer had at that seq "
                            f"({self.sim.label}):\n" + "\n".join(problems))

    def refresh(self):
        self.last_ask = None
        self.ask_for_snapshots()
        self.sim.clock.callLater(REFRESH * self.sim.rng.uniform(0.8, 1.2), self.refresh)


class Simulation:
    def __init__(self, n, shape, loss, duplication, seed, anti_entropy=True,
                 make_replica=Replica):
        self.rng = random.Random(seed)
        self.clock = task.Clock()
        self.net = Network(self.clock, self.rng, loss, duplication)
        self.anti_entropy = anti_entropy
        self.label = (f"n={n} shape={shape} loss={loss} duplication={duplication} "
                      f"seed={seed} anti_entropy={anti_entropy}")
        uris = [f"sip:10.0.0.{i + 1}:5060" for i in range(n)]
        links = subscriptions(shape, uris, self.rng)
        self.foci = {uri: SimFocus(self, uri, links[uri], make_replica) for uri in uris}
        for uri in uris:
            self.foci[uri].subscribers = [x for x in uris if uri in links[x]]
        self.joined = 0

    def run(self, actions=150):
        for focus in self.foci.values():
            focus.write((FOCUS, focus.truth_focus._replace(links=tuple(focus.links))))
            if self.anti_entropy:
                self.clock.callLater(self.rng.uniform(0, REFRESH), focus.refresh)
        for _ in range(actions):
            self.clock.callLater(self.rng.uniform(0, WORKLOAD), self.random_action)
        self.advance(WORKLOAD + HANDOVER_DEL + MAX_DELAY)

    def advance(self, seconds, step=0.05):
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def settle(self, max_periods=200):
        """Let messages flow (loss still on) until converged, then a bit longer."""
        if not self.anti_entropy:
            while self.clock.getDelayedCalls():
                self.clock.advance(MAX_DELAY)
            return
        for _ in range(max_periods):
            if not self.divergence():
                break
            self.advance(REFRESH)
        self.advance(2 * REFRESH)

    # -- the workload --

    def held(self):
        return [(focus, record) for focus in self.foci.values()
                for record in focus.truth_members.values()]

    def random_action(self):
        rng, now = self.rng, self.clock.seconds()
        foci = list(self.foci.values())
        action = rng.choice(["join"] * 4 + ["leave"] * 2 + ["handover"] * 2 + ["load"])
        held = self.held()
        if action == "join" or not held:
            self.joined += 1
            holder = rng.choice(foci)
            record = member(f"m{self.joined}", holder.uri, when=now)
            if rng.random() < 0.5:
                holder.write((SET, record), (FOCUS, holder.truth_focus._replace(
                    load=len(holder.truth_members) + 1)))
            else:
                holder.write((SET, record))
        elif action == "leave":
            holder, record = rng.choice(held)
            holder.write((DEL, record.endpoint))
        elif action == "handover":
            old, record = rng.choice(held)
            new = rng.choice([f for f in foci if f is not old])
            new.write((SET, record._replace(when=max(now, (record.when or 0.0) + 0.001),
                                            call_id=f"{record.endpoint}-{new.uri}",
                                            local_tag=f"tag-{new.uri}")))
            self.clock.callLater(rng.uniform(0.1, HANDOVER_DEL), self.end_old_leg,
                                 old, record.endpoint)
        else:
            focus = rng.choice(foci)
            focus.write((FOCUS, focus.truth_focus._replace(load=rng.randrange(50))))

    def end_old_leg(self, old, endpoint):
        if endpoint in old.truth_members:
            old.write((DEL, endpoint))

    # -- checking --

    def truth_view(self):
        return tuple((uri, f.truth_seq, f.truth_focus, sorted_records(f.truth_members))
                     for uri, f in sorted(self.foci.items()))

    def truth_members(self):
        """The merged view worked out from scratch: the latest join wins."""
        best = {}
        for focus in self.foci.values():
            for endpoint, record in focus.truth_members.items():
                key = ((record.when or 0.0), focus.uri)
                if endpoint not in best or key > best[endpoint][0]:
                    best[endpoint] = (key, (focus.uri, record))
        return {endpoint: entry for endpoint, (_, entry) in best.items()}

    def divergence(self):
        """A readable list of every difference from the truth; empty when converged."""
        lines, truth = [], {uri: part for uri, *part in self.truth_view()}
        expected_members = self.truth_members()
        for uri, focus in sorted(self.foci.items()):
            seen = {w: rest for w, *rest in focus.replica.view()}
            for writer in sorted(set(truth) | set(seen)):
                lines += describe(uri, writer, seen.get(writer), truth.get(writer))
            got = focus.replica.members()
            for endpoint in sorted(set(got) | set(expected_members)):
                if got.get(endpoint) != expected_members.get(endpoint):
                    lines.append(f"{uri} members()[{endpoint}]: held by "
                                 f"{holder_of(got.get(endpoint))}, expected "
                                 f"{holder_of(expected_members.get(endpoint))}")
        return lines


def describe(at, writer, seen, truth):
    """How focus `at`'s copy of one partition differs from what its writer wrote."""
    if seen == truth:
        return []
    if seen is None:
        return [f"{at}: no copy of {writer} (at seq {truth[0]}, {len(truth[2])} members)"]
    if truth is None:
        return [f"{at}: has a partition {writer} no focus wrote"]
    (seq, focus, members), (true_seq, true_focus, true_members) = seen, truth
    lines = [f"{at}: copy of {writer} at seq {seq}, the writer is at seq {true_seq}"]
    if focus != true_focus:
        lines.append(f"    focus record: {changed_fields(focus, true_focus)}")
    mine = {m.endpoint: m for m in members}
    real = {m.endpoint: m for m in true_members}
    for endpoint in sorted(set(mine) | set(real)):
        if mine.get(endpoint) != real.get(endpoint):
            diff = changed_fields(mine.get(endpoint), real.get(endpoint))
            lines.append(f"    {endpoint}: {diff}")
    return lines


def changed_fields(got, expected):
    """Only the fields that differ, so a failure reads in one line."""
    if got is None or expected is None:
        return f"{'absent' if got is None else 'present'} here, " \
               f"{'absent' if expected is None else 'present'} at the writer"
    return ", ".join(f"{name}={a!r} (expected {b!r})"
                     for name, a, b in zip(got._fields, got, expected) if a != b)


def sorted_records(members):
    return tuple(members[endpoint] for endpoint in sorted(members))


def holder_of(entry):
    return "nobody" if entry is None else f"{entry[0]} (when={entry[1].when})"


def check_converged(sim):
    problems = sim.divergence()
    if problems:
        pytest.fail(f"replicas differ from the truth ({sim.label}):\n"
                    + "\n".join(problems[:40]) + (f"\n... {len(problems)} lines" if
                                                  len(problems) > 40 else ""))
    views = {focus.replica.view() for focus in sim.foci.values()}
    merged = [focus.replica.members() for focus in sim.foci.values()]
    assert len(views) == 1 and all(m == merged[0] for m in merged)
    for endpoint, (holder, record) in merged[0].items():
        assert sim.foci[holder].truth_members.get(endpoint) == record, endpoint


SHAPES = ["mesh", "star", "chain", "ring", "random"]


@settings(max_examples=100, derandomize=True, deadline=None)
@given(n=st.integers(2, 10), shape=st.sampled_from(SHAPES),
       loss=st.sampled_from([0.05, 0.2, 0.4]), duplication=st.sampled_from([0.0, 0.1, 0.3]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_lossy_network_converges_to_what_each_focus_wrote(n, shape, loss, duplication, seed):
    sim = Simulation(n, shape, loss, duplication, seed)
    sim.run()
    sim.settle()
    check_converged(sim)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(n=st.integers(2, 10), shape=st.sampled_from(SHAPES),
       duplication=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2 ** 32 - 1))
def test_without_loss_relaying_alone_converges(n, shape, duplication, seed):
    """No snapshots at all: every delta must reach every focus by relaying."""
    sim = Simulation(n, shape, 0.0, duplication, seed, anti_entropy=False)
    sim.run()
    sim.settle()
    check_converged(sim)


class ForgetfulRelay(Replica):
    """Relays only its own deltas: what a broken relay looks like."""

    def relay_targets(self, delta, subscribers, source=None):
        return super().relay_targets(delta, subscribers, source) if delta.writer == self.uri else []


def test_the_simulation_catches_a_broken_relay():
    sim = Simulation(5, "chain", 0.0, 0.0, seed=1, anti_entropy=False,
                     make_replica=ForgetfulRelay)
    sim.run()
    sim.settle()
    with pytest.raises(pytest.fail.Exception, match="replicas differ"):
        check_converged(sim)
