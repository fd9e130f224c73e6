"""Many foci, one conference: the mesh between foci and its replicated state.

Each conference a focus serves has a ``Mesh``: the ``Replica`` of the
conference's state (conference/replica.py), the subscriptions this focus
holds to the other foci (``FocusLink``, ``Event: inet-ci-multifocus-ext``),
discovery of new foci, and the bookkeeping of delegations in flight.

How state flows (docs/design.md, "Consistency model"):

- A member joins, changes or leaves here: ``member_*`` writes a delta to
  our partition, the conference model follows (``sync``) and the delta is
  queued for the foci subscribed to us.
- A NOTIFY from a focus we subscribe to: a full document's snapshot is
  merged, a partial document's deltas applied once each; what was new is
  queued again for our subscribers that do not hear its writer directly
  (``Replica.relay_targets``).  A gap in a writer's sequence makes us
  refresh that subscription: the answer is a full NOTIFY.
- The queue is flushed by the notifier's rate control: one partial NOTIFY
  per subscribed focus per ``notify_interval``, rendered once per distinct
  set of deltas.
- Every focus named in the state is subscribed to directly: a mesh, never
  a chain (docs/design.md, "Discovery").

Discovery: when our load reaches ``capacity - headroom`` and the other foci
have fewer than ``headroom`` free places, candidates (``multifocus.peers``,
then members whose INVITE advertised the package) are tried one by one with
SUBSCRIBE: 2xx makes a focus, anything else (489 from a plain phone, 403,
a timeout) moves on to the next.  An agent asks a member's agent over the
member's call (``Target-Dialog``, RFC 4538, and the conference's key:
trust.py, agent.py).
"""

from twisted.logger import Logger

from ..conference import multifocus
from ..conference.model import ConferenceFull, Endpoint, JoiningMethod, Media
from ..conference.replica import (
    DEL,
    FOCUS,
    SET,
    FocusRecord,
    FocusState,
    MemberRecord,
    Replica,
)
from ..config import Role
from ..sip.dialog import target_dialog
from ..sip.uri import URI
from ..sip.values import NameAddr
from .delegation import HandOver
from .failover import Failover
from .node import focus_id
from .state_package import Batch
from .subscriber import Subscriber, out_of_dialog_request
from .trust import KEY_HEADER

__all__ = ["FocusLink", "Mesh", "nearest_first"]

LINK_RETRY = 3.0            # seconds before re-subscribing a lost link
LINK_RETRIES = 5            # then the focus is left to failure handling
CANDIDATE_BACKOFF = 60.0    # a candidate that refused is not asked again before


class FocusLink:
    """Our subscription to one other focus of the conference, and our watch
    on it: an OPTIONS in the subscription's dialog every ``keepalive``
    seconds; ``keepalive_misses`` unanswered in a row make the focus failed
    (failover.py), a 481 says our subscription was lost: subscribe again."""

    log = Logger()

    def __init__(self, mesh, uri, target=None, on_result=None, via=None):
        self.mesh = mesh
        self.uri = uri                  # the focus id
        self.target = target or URI.parse(uri)
        self.on_result = on_result
        self.via = via                  # recruiting a member's agent: the member's call
        self.up = False
        self.closed = False
        self.failures = 0
        self._sub = None
        self._timer = None
        self._resyncing = False
        self.misses = 0
        self._pinging = False
        self._watch_timer = None

    def start(self):
        mesh = self.mesh
        me = URI.parse(mesh.node.uri)
        headers = [("Event", multifocus.EVENT), ("Accept", multifocus.CONTENT_TYPE),
                   ("Expires", str(mesh.config.link_expires))]
        headers += list(mesh.policy.request_headers)
        dest = None
        if self.via is not None:        # proven by the call, over its flow (agent.py)
            call = self.via
            headers += [("Target-Dialog", target_dialog(call.dialog)),
                        (KEY_HEADER, mesh.room.conference_key().text())]
            dest = mesh.ua.flow(call.dialog, call.source)
        request = out_of_dialog_request("SUBSCRIBE", self.target, me, mesh.room.uri,
                                        NameAddr(me), headers)
        self._sub = Subscriber(mesh.ua, mesh.policy, request, self._notified,
                               self._result, self._ended, dest=dest, between_foci=True)
        self._sub.start()

    def _result(self, status):
        if 200 <= status < 300:
            self.up = True
            self.failures = 0
            self._schedule(self.mesh.config.link_expires / 2, self._refresh)
            self._watch_later()
            self.mesh.room.link_up(self.uri)
        if self.on_result is not None:
            on_result, self.on_result = self.on_result, None
            on_result(self, status)
        if self.up:
            self.mesh.link_changed()

    def _notified(self, request):
        self._resyncing = False
        self.misses = 0
        self.mesh.notified(self, request)

    # -- the watch -----------------------------------------------------------

    def _watch_later(self):
        if self._watch_timer is None or not self._watch_timer.active():
            self._watch_timer = self.mesh.clock.callLater(self.mesh.config.keepalive,
                                                          self._watch)

    def _watch(self):
        self._watch_timer = None
        if self.closed or not self.up:
            return
        if self._pinging:                       # the last ping is still unanswered
            self._missed()
        else:
            self._pinging = self._sub.ping(self._pong)
        if not self.closed and self.up:
            self._watch_later()

    def _pong(self, status):
        self._pinging = False
        if self.closed:
            return
        if status is None:                      # timeout or transport error
            self._missed()
        elif status == 481:
            self.misses = 0
            self.log.info("{conf}: {uri} lost our subscription: subscribing again",
                          conf=self.mesh.conference.name, uri=self.uri)
            self._sub.close()
        else:
            self.misses = 0

    def _missed(self):
        self.misses += 1
        if self.misses >= self.mesh.config.keepalive_misses:
            self.mesh.focus_failed(self.uri)

    def _refresh(self):
        self._timer = None
        self._sub.refresh(self.mesh.config.link_expires)
        self._schedule(self.mesh.config.link_expires / 2, self._refresh)

    def resync(self):
        """Ask for full state now (a refresh is answered with it)."""
        if self.up and not self._resyncing:
            self._resyncing = True
            self._sub.refresh(self.mesh.config.link_expires)

    def _ended(self, reason):
        was_up, self.up = self.up, False
        self._cancel()
        self._stop_watch()
        if self.closed:
            return
        self.log.info("{conf}: link to {uri} ended: {why}", conf=self.mesh.conference.name,
                      uri=self.uri, why=reason)
        self.mesh.link_lost(self, was_up)

    def _schedule(self, delay, call):
        self._cancel()
        self._timer = self.mesh.clock.callLater(delay, call)

    def _cancel(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stop_watch(self):
        if self._watch_timer is not None and self._watch_timer.active():
            self._watch_timer.cancel()
        self._watch_timer = None

    def close(self):
        self.closed = True
        self._cancel()
        self._stop_watch()
        if self._sub is not None:
            self._sub.close()


class Mesh:
    """The multi-focus side of one conference at this focus."""

    log = Logger()

    def __init__(self, room, node, ua, policy):
        self.room = room
        self.conference = room.conference
        self.node = node
        self.config = node.config
        self.ua = ua
        self.clock = ua.clock
        self.policy = policy
        self.links = {}             # focus id -> FocusLink
        self.failover = Failover(self, room, node, ua)
        self.replica = Replica(node.uri, self.own_record())
        self._batch = []            # [(Delta, source focus id or None)]
        self._user_of = {}          # endpoint -> user entity in the model
        self.candidates = {}        # focus id -> (URI, the call): members offering the package
        self._refused = {}          # candidate id -> time it refused
        self.recruiting = None
        self.reserved = {}          # focus id -> delegations in flight
        self.waiting = []           # legs accepted while no focus had room

    # -- our partition -----------------------------------------------------

    def own_record(self):
        """Our focus record as it stands (written with every change of ours)."""
        node = self.node
        links = tuple(sorted(uri for uri, link in self.links.items() if link.up))
        failover = self.failover
        state = failover.state
        if node.stopping and state == FocusState.ACTIVE:
            state = FocusState.LEAVING
        return FocusRecord(node.uri, failover.role, node.capacity, node.load, state,
                           links, failover.epoch, failover.down_claims(), node.tls)

    def member_joined(self, leg):
        self.write((SET, member_record(leg)), (FOCUS, self.own_record()))
        self.maybe_recruit()

    def member_changed(self, leg):
        self.write((SET, member_record(leg)))

    def member_left(self, leg):
        self.write((DEL, leg.endpoint_entity), (FOCUS, self.own_record()))
        if leg in self.waiting:
            self.waiting.remove(leg)

    def link_changed(self):
        self.write((FOCUS, self.own_record()))

    def write(self, *ops):
        """Change our partition: one delta, queued for our subscribers."""
        self._queue(self.replica.write(*ops), None)
        self.sync()

    def _queue(self, delta, source):
        self._batch.append((delta, source))
        self.room.publish_state()

    def take_batch(self):
        if not self._batch:
            return None
        batch = Batch(self, self._batch)
        self._batch = []
        return batch

    # -- what other foci tell us -------------------------------------------

    def notified(self, link, request):
        try:
            parsed = multifocus.parse(request.body or b"")
        except multifocus.MultifocusError as e:
            self.log.info("{conf}: bad NOTIFY from {uri}: {why}",
                          conf=self.conference.name, uri=link.uri, why=str(e))
            return
        replica = self.replica
        if parsed.snapshot is not None:
            replica.merge(parsed.snapshot)
        for delta in parsed.deltas:
            for applied in replica.receive(delta):
                self._queue(applied, link.uri)
        if replica.lagging():
            link.resync()
        self.sync()

    def sync(self):
        """Bring the conference model (what members see) in step with the
        replica's merged view."""
        endpoints, foci_changed = self.replica.take_changes()
        if endpoints:
            conference = self.conference
            for endpoint in endpoints:
                entry = self.replica.member(endpoint)
                old_user = self._user_of.pop(endpoint, None)
                if old_user is not None and (entry is None or entry[1].user != old_user):
                    conference.remove_endpoint(old_user, endpoint)
                if entry is None:
                    continue
                holder, record = entry
                try:
                    conference.set_endpoint(record.user, model_endpoint(record))
                except ConferenceFull:
                    self.log.info("{conf}: full, not showing {member}",
                                  conf=conference.name, member=record.user)
                    continue
                self._user_of[endpoint] = record.user
            self.room.publish_members()
        # Alone in the state, our own record's new load or links change
        # nothing here: no focus to fail over to, link, dial or hand to.
        if foci_changed:
            self._aliases()
        if foci_changed and not self.replica.alone():
            self.failover.foci_changed()
            self.room.foci_changed()
            self.connect_known()
            self.place_waiting()
            self.rebalance()
            self.maybe_recruit()        # the others filled up: any focus may look

    def _aliases(self):
        """The conference's URI at each live, active focus (its name is the
        same at every focus: room.py), the conference URI first while the
        focus holding it lives: where a newcomer may call (conf-uris)."""
        conference, name = self.conference, self.room.name
        uris = sorted(str(URI.parse(record.uri).replace(user=name))
                      for record in self.replica.live_foci()
                      if record.state == FocusState.ACTIVE)
        if conference.uri in uris:
            uris.remove(conference.uri)
            uris.insert(0, conference.uri)
        conference.uris = tuple(uris) or None

    # -- links ---------------------------------------------------------------

    def connect(self, uri, target=None, on_result=None, via=None):
        """Subscribe to focus ``uri`` unless we already do (or it is us)."""
        if uri == self.node.uri or uri in self.links or self.node.stopping:
            return None
        link = self.links[uri] = FocusLink(self, uri, target, on_result, via)
        link.start()
        return link

    def connect_known(self):
        for record in self.replica.live_foci():
            if record.state == FocusState.ACTIVE:
                self.connect(record.uri)

    def focus_failed(self, uri):
        """A link's keep-alives went unanswered (failover.py)."""
        self.failover.failed(uri)

    def link_lost(self, link, was_up):
        if self.links.get(link.uri) is link:
            del self.links[link.uri]
        self.room.link_down(link.uri)
        if was_up:
            self.link_changed()
        link.failures += 1
        record = self.replica.focus(link.uri)
        if link.failures <= LINK_RETRIES and record is not None and \
                record.state != FocusState.LEFT and link.uri not in self.replica.down():
            def again():
                if link.uri not in self.links and not self.node.stopping:
                    relink = self.connect(link.uri)
                    if relink is not None:
                        relink.failures = link.failures
            self.clock.callLater(LINK_RETRY * link.failures, again)

    def close(self):
        for link in list(self.links.values()):
            link.close()
        self.links.clear()

    # -- discovery -------------------------------------------------------------

    def add_candidate(self, uri, call):
        """A member whose INVITE advertised the multifocus package, and its
        call (an agent recruits over it)."""
        if len(self.candidates) < 100:
            self.candidates.setdefault(focus_id(uri), (uri, call))

    def spare(self):
        return sum(self.free_places(record) for record in self.replica.foci()
                   if record.uri != self.node.uri)

    def reachable(self, record):
        """An active, live focus we hear from."""
        return record.state == FocusState.ACTIVE and record.uri in self.links and \
            self.links[record.uri].up and record.uri not in self.replica.down()

    def free_places(self, record):
        if not self.reachable(record):
            return 0
        return max(0, record.capacity - record.load - self.reserved.get(record.uri, 0))

    def pick(self, exclude=(), overfill=False):
        """The least loaded other focus with room, or None; ``overfill``
        (we are leaving): the least loaded reachable one, room or not."""
        best = None
        for record in self.replica.foci():
            if record.uri == self.node.uri or record.uri in exclude or not (
                    self.reachable(record) if overfill else self.free_places(record) > 0):
                continue
            key = ((record.load + self.reserved.get(record.uri, 0)) / record.capacity,
                   record.uri)
            if best is None or key < best[0]:
                best = (key, record.uri)
        return None if best is None else best[1]

    def reserve(self, uri):
        self.reserved[uri] = self.reserved.get(uri, 0) + 1

    def release(self, uri):
        left = self.reserved.get(uri, 0) - 1
        if left > 0:
            self.reserved[uri] = left
        else:
            self.reserved.pop(uri, None)

    def can_place(self):
        """Could a newcomer beyond our capacity be handed to another focus?
        Also yes for a focus with room that we know from the state but do
        not hear from yet (our subscription to it is on its way): the call
        waits for it rather than getting 486."""
        return self.spare() > 0 or self.recruiting is not None or \
            self._next_candidate() is not None or any(
                record.uri != self.node.uri and record.state == FocusState.ACTIVE
                and record.capacity > record.load for record in self.replica.live_foci())

    def maybe_recruit(self):
        node, cfg = self.node, self.config
        if self.recruiting is not None or node.stopping or self.room.private:
            return
        if node.load < cfg.capacity - cfg.headroom or self.spare() >= max(cfg.headroom, 1):
            return
        candidate = self._next_candidate()
        if candidate is None:
            return
        uri, target, call = candidate
        self.log.info("{conf}: recruiting {uri}", conf=self.conference.name, uri=uri,
                      event="recruit")
        self.recruiting = uri
        self.connect(uri, target, self._recruited, via=call)

    def _next_candidate(self):
        """(focus id, URI, the member's call or None): configured peers
        first, then members whose call is still up, nearest first
        (``nearest_first``).  An agent, which shares no secret with anyone,
        asks members over their call (``via``)."""
        known = {record.uri for record in self.replica.foci()} | set(self.links)
        now = self.clock.seconds()
        agent = self.node.role is Role.AGENT
        tried = [(uri, target, None) for uri, target in self.node.peers]
        members = [(uri, target, call) for uri, (target, call) in self.candidates.items()
                   if call.is_ours]
        tried += [(uri, target, call if agent else None)
                  for uri, target, call in nearest_first(members)]
        for uri, target, call in tried:
            if uri in known or uri == self.node.uri:
                continue
            if now - self._refused.get(uri, -CANDIDATE_BACKOFF) < CANDIDATE_BACKOFF:
                continue
            return uri, target, call
        return None

    def _recruited(self, link, status):
        self.recruiting = None
        if 200 <= status < 300:
            self.log.info("{conf}: {uri} is a focus now", conf=self.conference.name,
                          uri=link.uri, event="recruited")
            return
        self.log.info("{conf}: candidate {uri} declined ({status})",
                      conf=self.conference.name, uri=link.uri, status=status)
        self._refused[link.uri] = self.clock.seconds()
        link.closed = True
        self.maybe_recruit()
        if self.recruiting is None:
            self.place_waiting()

    # -- calls waiting for a focus with room ----------------------------------

    def wait_for_room(self, leg, timeout):
        if leg in self.waiting:
            return
        self.waiting.append(leg)
        self.maybe_recruit()

        def give_up():
            if leg in self.waiting:
                self.waiting.remove(leg)
                self.log.info("{conf}: no focus took {member}: ending the call",
                              conf=self.conference.name, member=leg.user_entity)
                leg.hangup()
        self.clock.callLater(timeout, give_up)

    def place_waiting(self):
        """Foci changed: hand waiting calls to those with room now."""
        while self.waiting and self.pick() is not None:
            leg = self.waiting.pop(0)
            self.room.hand_over(leg)

    def rebalance(self):
        """More members here than capacity (a takeover, handovers taken in
        while a focus left): hand the surplus to foci with room, newest
        calls first; what finds no room stays (no one is dropped)."""
        node = self.node
        if node.load <= node.capacity:
            return
        legs = [leg for leg in self.room.legs if leg.is_ours]
        moving = [leg for leg in legs if leg.handing_over or leg.provisional
                  or leg in self.waiting]
        surplus = len(legs) - node.capacity - len(moving)
        for leg in reversed(legs):
            if surplus <= 0 or self.pick() is None:
                break
            if leg in moving:
                continue
            self.room.hand_over(leg, mode=HandOver.KEEP)
            surplus -= 1


def nearest_first(candidates):
    """Member candidates ``(uri, target, call)``: those whose round trip we
    measured (``[focus] qualify``'s OPTIONS, qualify.py) first, shortest
    first, then the others in the order they joined."""
    def key(item):
        index, (_, _, call) = item
        rtt = call.qualifier.rtt
        return (0, rtt, index) if rtt is not None else (1, 0.0, index)
    return [c for _, c in sorted(enumerate(candidates), key=key)]


def member_record(leg):
    """A call leg as the replicated state carries it."""
    dialog = leg.dialog
    return MemberRecord(
        endpoint=leg.endpoint_entity, user=leg.user_entity,
        status="on-hold" if leg.on_hold else "connected",
        joining_method=leg.joining_method, when=leg.joined_at, by=leg.by_uri,
        media=leg.media_status if leg.negotiated is not None else None,
        call_id=dialog.call_id, local_tag=dialog.local_tag, remote_tag=dialog.remote_tag,
        remote_target=str(leg.reachable_target()),
        route=tuple(str(r) for r in dialog.route_set), epoch=leg.epoch,
        srtp=leg.negotiated.srtp_profile if leg.negotiated is not None else None,
        codec=_codec_name(leg.negotiated))


def _codec_name(negotiated):
    codec = negotiated.media_codec if negotiated is not None else None
    return codec.rtpmap() if codec is not None else None


def model_endpoint(record):
    """A replicated member as an RFC 4575 endpoint (§5.7.5 call-info tags
    as the dialog's creator named them)."""
    from_tag, to_tag = record.remote_tag, record.local_tag
    if record.joining_method == JoiningMethod.DIALED_OUT:
        from_tag, to_tag = to_tag, from_tag
    media = [Media("1", "audio", status=record.media, display_text=record.codec)] \
        if record.media else []
    return Endpoint(record.endpoint, status=record.status,
                    joining_method=record.joining_method, when=record.when, by=record.by,
                    call_id=record.call_id, from_tag=from_tag, to_tag=to_tag, media=media)
