"""A focus leaves or dies, nobody drops (docs/design.md, "Failover").

Each conference's ``Mesh`` has a ``Failover`` for the four duties below.
What it decides is written to our own focus record (``Mesh.link_changed``)
and so spreads like any change of the replicated state (replica.py).  Its
role and state are the replicated enums (``FocusRole``, ``FocusState``)
and change in ``_set`` only.

- **Watching.**  Every ``FocusLink`` pings its focus (OPTIONS in the
  subscription's dialog) each ``keepalive`` seconds; after
  ``keepalive_misses`` unanswered in a row it calls ``failed(uri)``.  We
  then claim that focus down at its epoch: a down partition holds nobody.
- **Taking over.**  All foci compute ``Replica.successor(dead)`` from the
  same state, so exactly one acts (no race).  It sends each orphan a new
  INVITE with ``Replaces`` for the dead dialog (its ids are in the
  replicated state), ``Record-Route`` to itself and the conference URI as
  From/Contact (``Room.dial_out``), with the member's ownership epoch + 1.
  The successor of a primary becomes primary and takes over the registrar
  binding of the conference URI (``registrar.py``).  Members beyond our
  capacity are then spread over foci with room (``Mesh.rebalance``).
- **Coming back.**  A focus that sees itself claimed down was frozen past
  the detection time and lost its members to the successor: it ends its
  calls, drops their records and writes its record with a higher epoch,
  which lifts the claim; the mesh takes it back as an empty focus.
- **Leaving.**  ``leave()`` (SIGTERM, ``POST /api/v1/leave``): state
  "leaving" so nobody delegates to us, every member handed to another focus
  (``Delegator.hand_over``: REFER, the taker INVITEs with Replaces), then
  state "left", and the focus list drops us.
"""

from twisted.internet import defer
from twisted.logger import Logger

from ..conference.replica import DEL, FOCUS, FocusRole, FocusState
from ..config import Role
from ..sip.errors import SIPError
from ..sip.headers import Headers
from ..sip.message import MAX_FORWARDS, Request
from ..sip.uri import URI
from ..sip.values import NameAddr
from ..tracing import TRACE
from .call import LegState
from .delegation import HandOver

__all__ = ["Failover"]

LEAVE_POLL = 0.1        # seconds between looks at the handovers of a leaving focus
LAST_CSEQ = 2 ** 31 - 1     # the largest CSeq allowed (RFC 3261 §8.1.1.5)


class Failover:
    """Failure handling and leaving for one conference's mesh."""

    log = Logger()

    def __init__(self, mesh, room, node, ua):
        self.mesh = mesh
        self.room = room
        self.node = node
        self.ua = ua
        # An agent is the primary of the conferences it makes.
        self.role = FocusRole.SECONDARY if node.role is Role.SECONDARY else FocusRole.PRIMARY
        self.state = FocusState.ACTIVE
        self.epoch = 0
        self.claims = {}        # focus id -> epoch we believe failed
        self._taken = set()     # (focus id, epoch) whose members we re-homed

    def _set(self, role=None, state=None):
        """Our role or state in this conference changes here, and only here."""
        if TRACE:
            self.log.debug("{conf}: {old_role}/{old_state} -> {role}/{state}",
                           conf=self.room.name, old_role=self.role, old_state=self.state,
                           role=role or self.role, state=state or self.state)
        self.role = role or self.role
        self.state = state or self.state

    # -- our focus record --------------------------------------------------

    def down_claims(self):
        """Our claims still in force: a focus back with a higher epoch, or
        gone from the state, is dropped (bounds the list)."""
        if not self.claims:
            return ()
        replica = self.mesh.replica
        for uri, epoch in list(self.claims.items()):
            record = replica.focus(uri)
            if record is None or record.epoch > epoch:
                del self.claims[uri]
        return tuple(sorted(self.claims.items()))

    # -- detection ---------------------------------------------------------

    def failed(self, uri):
        """A link's keep-alives went unanswered: claim ``uri`` down."""
        mesh = self.mesh
        record = mesh.replica.focus(uri)
        if record is None or uri == self.node.uri or uri in mesh.replica.down() or \
                self.node.stopping:
            return
        self.log.info("{conf}: focus {uri} failed (epoch {epoch})", conf=mesh.conference.name,
                      uri=uri, epoch=record.epoch, event="focus-failed")
        self.claims[uri] = record.epoch
        link = mesh.links.pop(uri, None)
        if link is not None:
            link.close()
        self.room.link_down(uri)
        mesh.link_changed()

    # -- what the state says ------------------------------------------------

    def foci_changed(self):
        """Some focus record changed: were we replaced?  Is a dead focus
        ours to take over?"""
        mesh = self.mesh
        replica, me = mesh.replica, self.node.uri
        if self.node.stopping:
            return
        down = replica.down()
        if me in down:
            self._come_back()
            return
        for uri in sorted(down):
            record = replica.focus(uri)
            key = (uri, record.epoch)
            if key in self._taken or replica.successor(uri) != me:
                continue
            self._taken.add(key)
            self._take_over(uri, record)
        self._check_primary()

    def _check_primary(self):
        """No live primary (it failed, or left): its successor becomes
        primary and takes over the conference URI's binding."""
        mesh = self.mesh
        replica, me = mesh.replica, self.node.uri
        primary = FocusRole.PRIMARY
        if self.role == primary or any(f.role == primary for f in replica.live_foci()):
            return
        gone = [f.uri for f in replica.foci() if f.role == primary]
        if not gone or replica.successor(gone[0]) != me:
            return
        self._set(role=primary)
        self.log.info("{conf}: primary now (succeeding {uri})", conf=mesh.conference.name,
                      uri=gone[0], event="primary")
        mesh.link_changed()
        self.room.became_primary(gone[0])

    def _take_over(self, uri, record):
        mesh = self.mesh
        replica = mesh.replica
        # Not an orphan: a member some live focus holds already, under this
        # endpoint or by another call to the same device (a handover whose
        # first call the dead focus had not ended yet).
        live = {(record.user, record.remote_target) for _, record in replica.members().values()}
        orphans = [member for endpoint, member in replica.held_by(uri).items()
                   if replica.member(endpoint) is None and
                   (member.user, member.remote_target) not in live]
        self.log.info("{conf}: taking over {count} members of {uri}", conf=mesh.conference.name,
                      count=len(orphans), uri=uri, event="takeover")
        for member in orphans:
            self._rehome(member)

    def _rehome(self, record):
        """Take over a failed focus's member: a new INVITE with Replaces for
        its dead dialog, as the conference (CallLeg.dial)."""
        conference = self.mesh.conference
        if not (record.remote_target and record.call_id and record.local_tag
                and record.remote_tag):
            self.log.info("{conf}: cannot take over {member}: dialog unknown",
                          conf=conference.name, member=record.user)
            return
        try:
            target = URI.parse(record.remote_target)
        except SIPError:
            return
        # RFC 3891 §3: to-tag is the phone's own tag, from-tag the dead focus's.
        replaces = f"{record.call_id};to-tag={record.remote_tag};from-tag={record.local_tag}"

        def report(status, reason):
            if status >= 300:
                self.log.info("{conf}: taking over {member} failed: {status} {reason}",
                              conf=conference.name, member=record.user, status=status,
                              reason=reason)
            elif status >= 200 and leg.state is LegState.ENDED:
                # The phone refused Replaces and took the call without it:
                # its dialog with the dead focus is still up.
                self._end_dead_dialog(record)
        by = f"<{record.by}>" if record.by else None
        leg = self.room.dial_out(target, by, report, replaces=replaces, adopt=record)

    def _end_dead_dialog(self, record):
        """BYE in a failed focus's dialog with a member, on its behalf: the
        replicated state has the dialog's ids, remote target and route set,
        which is all a request within a dialog needs (RFC 3261 §12.2.1.1).
        Its CSeq is the largest allowed (§8.1.1.5), above any the dead
        focus used, so the phone takes it in order (§12.2.2)."""
        conference = self.mesh.conference
        h = Headers()
        h.add("Max-Forwards", MAX_FORWARDS)
        for route in record.route:
            h.add("Route", route)
        h.add("From", str(NameAddr(URI.parse(conference.uri), params={"tag": record.local_tag})))
        h.add("To", str(NameAddr(URI.parse(record.user), params={"tag": record.remote_tag})))
        h.add("Call-ID", record.call_id)
        h.add("CSeq", f"{LAST_CSEQ} BYE")
        request = Request("BYE", URI.parse(record.remote_target), h)
        self.log.info("{conf}: ending {member}'s call with the failed focus",
                      conf=conference.name, member=record.user)
        self.ua.send_request(request, lambda response: None, lambda reason: None)

    def _come_back(self):
        """We were claimed down at our epoch: the successor has our members."""
        mesh, me = self.mesh, self.node.uri
        legs = list(self.room.legs)
        self.epoch = mesh.replica.claimed(me) + 1
        self.log.info("{conf}: we were taken for failed: giving up {count} calls, "
                      "back with epoch {epoch}", conf=mesh.conference.name, count=len(legs),
                      epoch=self.epoch, event="replaced")
        primary = FocusRole.PRIMARY
        if self.role == primary and any(f.role == primary and f.uri != me
                                        for f in mesh.replica.live_foci()):
            self._set(role=FocusRole.SECONDARY)  # our successor holds the URI now
            self.room.no_longer_primary()
        ops = [(DEL, endpoint) for endpoint in mesh.replica.held_by(me)]
        mesh.write(*ops, (FOCUS, mesh.own_record()))
        for leg in legs:
            leg.hangup()
        # The foci that took us for failed dropped their subscriptions to
        # us: subscribe to them afresh, and they subscribe back (the mesh).
        for uri in list(mesh.links):
            mesh.links.pop(uri).close()
        mesh.connect_known()

    # -- leaving -------------------------------------------------------------

    def leave(self):
        """Hand every member to another focus; Deferred when done (each call
        ended or taken) or after ``leave_timeout``."""
        mesh, clock = self.mesh, self.ua.clock
        others = [f for f in mesh.replica.live_foci()
                  if f.uri != self.node.uri and f.state == FocusState.ACTIVE
                  and f.uri in mesh.links]
        legs = [leg for leg in self.room.legs if leg.is_ours]
        if not others:
            return defer.succeed(None)
        self._set(state=FocusState.LEAVING)
        mesh.link_changed()
        self.log.info("{conf}: leaving: handing {count} members to {foci} foci",
                      conf=mesh.conference.name, count=len(legs), foci=len(others),
                      event="leave")
        for leg in legs:
            self.room.hand_over(leg, mode=HandOver.OVERFILL)
        done = defer.Deferred()
        deadline = clock.seconds() + self.node.config.leave_timeout

        def check():
            # Done when no handover is still under way: each member was taken
            # (or hung up), or no focus would take it (then it gets BYE).
            kept = [leg for leg in legs if leg.state is not LegState.ENDED
                    and not leg.handed_off]
            if any(leg.handing_over for leg in kept) and clock.seconds() < deadline:
                clock.callLater(LEAVE_POLL, check)
                return
            if kept:
                self.log.info("{conf}: no focus took {count} members: ending their calls",
                              conf=mesh.conference.name, count=len(kept))
            self._set(state=FocusState.LEFT)
            mesh.link_changed()
            done.callback(None)
        check()
        return done
