"""The replicated state of a multi-focus conference (docs/design.md, "Consistency model").

Each focus is the only writer of its own *partition*: its focus record
(uri, role, capacity, load, state, the foci it subscribes to) and the
members it holds, with their dialog identifiers.  Every change a writer
makes is a ``Delta`` numbered by a per-writer sequence; a focus applies a
delta once (deduplicated on (writer, seq)), in sequence order, and relays it
to subscribed foci that do not hear the writer directly.  A ``Snapshot``
(every partition with its seq) repairs whatever was lost: it is what a
subscription's full NOTIFY carries.  The conference is the union of the
partitions, so all foci converge once messages stop.

``Replica`` is one focus's copy of all partitions.  A delta whose
predecessors are missing waits in a per-writer buffer (at most
``max_pending``; beyond that it is dropped and ``lagging()`` keeps asking
for a snapshot).  The first delta of a writer we have no snapshot of is
applied only if it is seq 1 and carries the writer's focus record: the
seq 0 state (that record, no members) is otherwise unknown to us.

Failure and epochs (docs/design.md, "Failover"): ownership changes carry an epoch.
A focus record carries its writer's ``epoch`` (incarnation) and the foci
the writer believes failed, as ``down`` claims (uri, epoch).  A partition
is *down* while any focus record claims it at its current epoch or later;
a down partition's members leave the merged view, and the one survivor
``successor()`` names re-homes them.  A focus that comes back (it was only
frozen) sees itself claimed, gives its members up and writes a record with
a higher epoch, which lifts the claim.  Every member record has an
``epoch`` too: whoever takes a member over (handover, takeover) writes
the previous epoch + 1, and the merged view prefers the highest, so a late
record from a replaced holder never wins.

Bounds: deltas and snapshots are trusted to be as large as the caller's
message and member limits allow (ops per delta, members per partition,
number of writers); this module only bounds what it buffers.  A focus that
restarts must come back under a new uri: receivers ignore deltas they
already have, and ``merge`` never touches our own partition.

Pure data and bookkeeping: no Twisted, no I/O, no clock.
"""

import enum
from typing import NamedTuple, Optional, Tuple

__all__ = ["Replica", "FocusRecord", "MemberRecord", "Delta", "Snapshot", "Partition",
           "SET", "DEL", "FOCUS", "FocusRole", "FocusState", "OUT_STATES"]


class FocusRole(enum.StrEnum):
    """A focus's role in one conference (docs/design.md, "Roles")."""

    PRIMARY = "primary"         # holds the conference URI
    SECONDARY = "secondary"


class FocusState(enum.StrEnum):
    """A focus's state in one conference, as its own record says."""

    ACTIVE = "active"           # takes members
    LEAVING = "leaving"         # handing its members over
    FAILED = "failed"
    LEFT = "left"               # gone for good: a tombstone


#: States of a focus that takes no new members
OUT_STATES = frozenset((FocusState.LEAVING, FocusState.FAILED, FocusState.LEFT))

#: Delta operations: ("set", MemberRecord), ("del", endpoint), ("focus", FocusRecord)
SET, DEL, FOCUS = "set", "del", "focus"


class FocusRecord(NamedTuple):
    """One focus of the conference, as its own writer describes it."""

    uri: str                    # the focus's SIP URI (its id): sip:host:port
    role: FocusRole = FocusRole.SECONDARY
    capacity: int = 0           # members it may hold
    load: int = 0               # members it holds
    state: FocusState = FocusState.ACTIVE
    links: Tuple[str, ...] = () # URIs of the foci it subscribes to, sorted
    epoch: int = 0              # the writer's incarnation (raised when it was replaced)
    down: Tuple[Tuple[str, int], ...] = ()  # (uri, epoch) the writer believes failed, sorted
    tls: Optional[str] = None   # host:port of its TLS listener: a cascade with SDES keys


class MemberRecord(NamedTuple):
    """One member endpoint (one dialog) held by one focus.

    ``endpoint`` is the key within the holder's partition (the RFC 4575
    endpoint entity).  The dialog identifiers are the holder's view of the
    dialog (``local_tag`` is the holder's tag), so another focus can build
    a Replaces header or take the dialog over (failover).
    """

    endpoint: str               # endpoint entity (Contact URI of the dialog)
    user: str                   # user entity (the member's AoR)
    status: str = "connected"   # RFC 4575 §5.7.2 endpoint status
    joining_method: str = "dialed-in"
    when: Optional[float] = None  # Unix time it joined (the writer's clock)
    by: Optional[str] = None    # joining-info/by (Referred-By)
    media: Optional[str] = None # media status (RFC 4575 §5.7.4), None without media
    call_id: Optional[str] = None
    local_tag: Optional[str] = None
    remote_tag: Optional[str] = None
    remote_target: Optional[str] = None
    route: Tuple[str, ...] = ()  # the holder's route set toward the member
    epoch: int = 0              # ownership epoch: +1 at each handover or takeover
    srtp: Optional[str] = None  # the call's SRTP profile (RTP/SAVP...), None: plain
    codec: Optional[str] = None # its codec as SDP names it (opus/48000/2), None: no audio


class Delta(NamedTuple):
    """Change number ``seq`` of ``writer``: a tuple of operations."""

    writer: str
    seq: int
    ops: tuple


class Partition(NamedTuple):
    """Everything one writer has written, as of its change ``seq``."""

    seq: int
    focus: Optional[FocusRecord]
    members: dict               # endpoint -> MemberRecord (treat as read-only)


class Snapshot(NamedTuple):
    """Every partition a focus knows: writer -> Partition."""

    partitions: dict


class _Part:
    """Our mutable copy of one partition."""

    __slots__ = ("seq", "focus", "members")

    def __init__(self, seq, focus, members):
        self.seq, self.focus, self.members = seq, focus, members


def _is_member(record):
    """A record we can key and order: a str endpoint and a numeric (or no) join time."""
    return (isinstance(record, MemberRecord) and isinstance(record.endpoint, str)
            and (record.when is None or isinstance(record.when, (int, float))))


def _merge_key(holder, record):
    """Which holder wins an endpoint held twice (a handover): the highest
    ownership epoch, then the latest join."""
    return (record.epoch, record.when or 0.0, holder)


class Replica:
    """One focus's copy of every partition; see the module docstring."""

    def __init__(self, uri, focus, max_pending=1000):
        if not isinstance(focus, FocusRecord) or focus.uri != uri:
            raise ValueError(f"our focus record must have uri {uri!r}")
        self.uri = uri
        self.max_pending = max_pending
        self._parts = {uri: _Part(0, focus, {})}
        self._pending = {}      # writer -> {seq: Delta} waiting for a gap to fill
        self._dropped = {}      # writer -> highest seq dropped from a full buffer
        self._holders = {}      # endpoint -> set of writers holding it
        self._merged = {}       # endpoint -> (holder, MemberRecord)
        self._down = frozenset()  # writers whose partition is claimed failed
        self._claimed = {}      # writer -> highest epoch any focus record claims down
        self._changed = set()
        self._foci_changed = False

    # -- changes -------------------------------------------------------------

    def write(self, *ops):
        """Apply our own change and return the Delta to send to subscribers."""
        ops = self._checked_ops(self.uri, ops)
        part = self._parts[self.uri]
        self._apply(self.uri, part, ops)
        part.seq += 1
        return Delta(self.uri, part.seq, ops)

    def receive(self, delta):
        """Apply a delta from the network once, in order; return what got applied."""
        writer, seq, ops = delta
        if not isinstance(writer, str) or type(seq) is not int or seq < 1:
            raise ValueError(f"bad delta header: {writer!r} {seq!r}")
        delta = Delta(writer, seq, self._checked_ops(writer, ops))
        if writer == self.uri:
            return []
        part = self._parts.get(writer)
        if part is not None and seq <= part.seq:
            return []
        if part is None and seq == 1 and any(op == FOCUS for op, _ in delta.ops):
            part = self._parts[writer] = _Part(0, None, {})
        if part is None or seq != part.seq + 1:
            self._buffer(delta)
            return []
        self._apply(writer, part, delta.ops)
        part.seq = seq
        return [delta] + self._release(writer)

    def merge(self, snapshot):
        """Take every partition newer than ours (never our own); True if anything changed."""
        newer = {}
        for writer, theirs in snapshot.partitions.items():
            if type(theirs.seq) is not int or theirs.seq < 0:
                raise ValueError(f"bad seq {theirs.seq!r} for {writer!r}")
            ours = self._parts.get(writer)
            if writer != self.uri and theirs.seq > (ours.seq if ours else -1):
                newer[writer] = self._checked_partition(writer, theirs)
        for writer, theirs in newer.items():
            self._replace(writer, theirs)
        released = [self._release(writer) for writer in newer]
        return bool(newer) or any(released)

    def _checked_ops(self, writer, ops):
        """Refuse a malformed op before anything is applied."""
        checked = []
        for op in ops:
            if not isinstance(op, tuple) or len(op) != 2:
                raise ValueError(f"bad op {op!r}")
            name, arg = op
            ok = ((name == SET and _is_member(arg))
                  or (name == DEL and isinstance(arg, str))
                  or (name == FOCUS and isinstance(arg, FocusRecord) and arg.uri == writer))
            if not ok:
                raise ValueError(f"bad op {op!r} from {writer!r}")
            checked.append((name, arg))
        return tuple(checked)

    def _checked_partition(self, writer, part):
        """Refuse a malformed partition before the snapshot is applied."""
        if part.focus is not None and not (isinstance(part.focus, FocusRecord)
                                           and part.focus.uri == writer):
            raise ValueError(f"bad focus record for {writer!r}: {part.focus!r}")
        for endpoint, record in part.members.items():
            if not _is_member(record) or record.endpoint != endpoint:
                raise ValueError(f"bad member {endpoint!r} of {writer!r}")
        return part

    def _buffer(self, delta):
        """Hold a delta that arrived before its predecessors, within max_pending."""
        waiting = self._pending.setdefault(delta.writer, {})
        if delta.seq in waiting:
            return
        if len(waiting) >= self.max_pending:
            self._dropped[delta.writer] = max(delta.seq, self._dropped.get(delta.writer, 0))
            return
        waiting[delta.seq] = delta

    def _release(self, writer):
        """Apply the buffered deltas that now follow on; forget the stale ones."""
        part, waiting = self._parts.get(writer), self._pending.get(writer)
        released = []
        if part is None or not waiting:
            return released
        for seq in [seq for seq in waiting if seq <= part.seq]:
            del waiting[seq]
        while part.seq + 1 in waiting:
            delta = waiting.pop(part.seq + 1)
            self._apply(writer, part, delta.ops)
            part.seq = delta.seq
            released.append(delta)
        if not waiting:
            del self._pending[writer]
        if self._dropped.get(writer, 0) <= part.seq:
            self._dropped.pop(writer, None)
        return released

    def _apply(self, writer, part, ops):
        """Apply ops to one partition, keeping the merged view current: O(ops)."""
        members = part.members
        for name, arg in ops:
            if name == SET:
                old = members.get(arg.endpoint)
                if old != arg:
                    members[arg.endpoint] = arg
                    self._holders.setdefault(arg.endpoint, set()).add(writer)
                    self._remerge(arg.endpoint)
            elif name == DEL:
                if members.pop(arg, None) is not None:
                    self._holders[arg].discard(writer)
                    self._remerge(arg)
            elif part.focus != arg:
                old, part.focus = part.focus, arg
                self._foci_changed = True
                if old is None or old.down != arg.down or old.epoch != arg.epoch:
                    self._refresh_down()        # not for a new load or links alone

    def _replace(self, writer, theirs):
        """Put a snapshot's partition in place of ours, touching only what differs."""
        part = self._parts.get(writer)
        if part is None:
            part = self._parts[writer] = _Part(0, None, {})
        old, new = part.members, theirs.members
        part.members = dict(new)
        for endpoint in old:
            if endpoint not in new:
                self._holders[endpoint].discard(writer)
                self._remerge(endpoint)
        for endpoint, record in new.items():
            if old.get(endpoint) != record:
                self._holders.setdefault(endpoint, set()).add(writer)
                self._remerge(endpoint)
        if part.focus != theirs.focus:
            part.focus = theirs.focus
            self._foci_changed = True
            self._refresh_down()
        part.seq = theirs.seq

    def _refresh_down(self):
        """Recompute which partitions are down after a focus record changed;
        the members of those that flipped are merged again (O(their members))."""
        claimed = {}
        for part in self._parts.values():
            if part.focus is not None:
                for uri, epoch in part.focus.down:
                    claimed[uri] = max(epoch, claimed.get(uri, -1))
        self._claimed = claimed
        down = frozenset(uri for uri, epoch in claimed.items()
                         if uri in self._parts and self._epoch(uri) <= epoch)
        flipped, self._down = down ^ self._down, down
        for uri in flipped:
            for endpoint in list(self._parts[uri].members):
                self._remerge(endpoint)

    def _epoch(self, uri):
        focus = self._parts[uri].focus
        return focus.epoch if focus is not None else 0

    def _remerge(self, endpoint):
        """Recompute one endpoint of the merged view and note if it changed:
        the live holder with the highest merge key."""
        holders = self._holders.get(endpoint)
        entry = None
        if holders and len(holders) == 1:       # the usual case: one holder
            for holder in holders:
                if holder not in self._down:
                    entry = (holder, self._parts[holder].members[endpoint])
        elif holders:
            live = [(holder, self._parts[holder].members[endpoint]) for holder in holders
                    if holder not in self._down]
            if live:
                entry = max(live, key=lambda pair: _merge_key(*pair))
        else:
            self._holders.pop(endpoint, None)
        if self._merged.get(endpoint) != entry:
            if entry is None:
                del self._merged[endpoint]
            else:
                self._merged[endpoint] = entry
            self._changed.add(endpoint)

    # -- reading -------------------------------------------------------------

    def snapshot(self):
        """Every partition, copied so the receiver never sees our later changes."""
        return Snapshot({writer: Partition(part.seq, part.focus, dict(part.members))
                         for writer, part in self._parts.items()})

    def seqs(self):
        return {writer: part.seq for writer, part in self._parts.items()}

    def lagging(self):
        """Writers we know we are behind on (deltas buffered past a gap, or
        dropped from a full buffer): a snapshot would catch us up."""
        behind = set(self._pending)
        behind.update(writer for writer, seq in self._dropped.items()
                      if writer not in self._parts or seq > self._parts[writer].seq)
        return behind

    def alone(self):
        """No partition but ours: we never heard of another focus."""
        return len(self._parts) == 1

    def foci(self):
        return sorted((part.focus for part in self._parts.values() if part.focus is not None),
                      key=lambda focus: focus.uri)

    def down(self):
        """Writers claimed failed at their current epoch (ourselves included:
        then we were replaced while frozen)."""
        return self._down

    def claimed(self, uri):
        """The highest epoch at which ``uri`` is claimed down (-1: never)."""
        return self._claimed.get(uri, -1)

    def live_foci(self):
        """Focus records of the conference's foci: neither down nor gone."""
        return [focus for focus in self.foci()
                if focus.uri not in self._down and focus.state != FocusState.LEFT]

    def successor(self, uri):
        """The one focus that takes over ``uri`` (its members, and the
        primary role if it had it): the lowest id among the live active foci
        other than ``uri``.  Every replica with the same state computes the
        same answer, so no two survivors race (docs/design.md, "Failover")."""
        ids = [focus.uri for focus in self.live_foci()
               if focus.uri != uri and focus.state == FocusState.ACTIVE]
        return min(ids) if ids else None

    def focus(self, uri):
        part = self._parts.get(uri)
        return part.focus if part is not None else None

    def members(self):
        """The merged view (a copy): endpoint -> (holder, MemberRecord)."""
        return dict(self._merged)

    def member(self, endpoint):
        """(holder, MemberRecord) of one endpoint in the merged view, or None
        (no copy of the view: this runs on every change)."""
        return self._merged.get(endpoint)

    def holds(self, uri, endpoint):
        """Does ``uri``'s partition hold ``endpoint``?"""
        part = self._parts.get(uri)
        return part is not None and endpoint in part.members

    def held_by(self, uri):
        part = self._parts.get(uri)
        return dict(part.members) if part is not None else {}

    def take_changes(self):
        """Endpoints whose merged entry changed, and whether any focus record did."""
        changed, foci_changed = self._changed, self._foci_changed
        self._changed, self._foci_changed = set(), False
        return changed, foci_changed

    def relay_targets(self, delta, subscribers, source=None):
        """Subscribers that need this delta from us: not its source or writer,
        nor those that subscribe to the writer themselves."""
        if delta.writer == self.uri:
            return [uri for uri in subscribers if uri != source]
        targets = []
        for uri in subscribers:
            if uri == source or uri == delta.writer:
                continue
            record = self.focus(uri)
            if record is None or delta.writer not in record.links:
                targets.append(uri)
        return targets

    def view(self):
        """Canonical state: equal on two replicas iff they have converged."""
        return tuple((writer, part.seq, part.focus,
                      tuple(part.members[endpoint] for endpoint in sorted(part.members)))
                     for writer, part in sorted(self._parts.items()))
