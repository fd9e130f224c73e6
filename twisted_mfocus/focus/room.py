"""One conference at this focus: the ``Room``, and the registry of rooms.

A room owns everything this focus keeps about one conference: the model
members see (``conference``), its members' calls (``legs``), the cascade
legs to the other foci (``cascades``), the multi-focus mesh with its
replicated state and failover (``mesh``), the delegations (``delegator``),
the registrar binding of its URI (``binding``) and, in agent mode, the
agent's record of the call it hosts (``hosted``).  Its mixer is the media
engine's, keyed by the room: it comes with the room's first party and goes
with its last.

Rules of this module:

- A call's life reaches the conference here: ``leg_joined``,
  ``leg_changed``, ``leg_ended`` (called by ``CallLeg``) keep the mix, the
  mesh, the agent and the load in step.
- A room is retired in one place, ``Rooms.retire_if_idle``: when it has no
  call, no member anywhere, no subscriber, no link to another focus, and
  the focus is not stopping.  Retiring removes its registrar binding.
- The rooms a focus holds are bounded (``[focus] max_conferences``).
- A caller of a room with a PIN waits in the lobby (``lobby``, pin.py):
  answered, but no member (not mixed, not in the mesh, the model or the
  API) until it enters the PIN; one that fails leaves no trace.
"""

import time
from typing import NamedTuple

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ..conference import multifocus
from ..conference.model import Conference, JoiningMethod
from ..config import Role, RoomConfig
from ..media.rtp import PortsExhausted
from ..sip.ids import new_tag
from ..sip.uri import URI
from ..sip.values import NameAddr
from .call import CallLeg, LegState, aor
from .cascade import Cascades
from .delegation import Delegator, HandOver
from .interfaces import IRoom
from .mesh import Mesh
from .pin import Lobby

__all__ = ["Room", "Rooms", "RoomServices"]

CONFIGURED = "configured"       # [focus] create_rooms: only the [room:NAME] rooms
#: Statuses after which a handover INVITE is not tried again without Replaces
FINAL_REFUSALS = (486, 600, 603)


class RoomServices(NamedTuple):
    """The focus-wide services a room and its pieces use."""

    node: object                # node.Node
    ua: object                  # ua.UserAgent
    policy: object              # sip.uas.UASPolicy
    notifier: object            # subscriptions.Notifier
    members_package: object     # the RFC 4575 package (IEventPackage)
    state_package: object       # the multifocus package (IEventPackage)
    audio: object               # audio.Audio
    rtp_pool: object            # media.rtp.RTPPortPool
    registrar: object           # registrar.Registrar, or None
    agent: object               # agent.Agent, or None
    referrals: object           # refer.Referrals
    rooms: object               # the Rooms registry
    budgets: object             # budget.SourceBudgets: what each source holds
    trust: object               # trust.FocusTrust


@implementer(IRoom)
class Room:
    """Everything this focus keeps about one conference."""

    log = Logger()

    def __init__(self, name, uri, services):
        self.services = s = services
        self.name = name
        self._uri = None
        self.conference = Conference(name, uri,
                                     max_users=s.node.config.max_conference_members)
        #: the room's policy: its [room:NAME] section, or an open room's
        self.policy = s.node.config.rooms.get(name) or RoomConfig(name)
        self.media_address = s.rtp_pool.interface
        self.legs = []              # the members' calls (not the cascade legs)
        self.uncounted = set()      # of which an agent's two-party call: not load
        #: callers answered, their PIN not yet entered (pin.py)
        self.lobby = Lobby(self, s.ua.clock, s.node.config.pin_timeout, s.audio,
                           self._lobby_done)
        self.binding = None         # registrar.Binding of our URI, if we hold it
        self.hosted = None          # agent.Hosted, in agent mode
        self.hold = None            # its creator's source budget (budget.Hold)
        self.key = None             # trust.ConferenceKey, of a conference among agents
        self.cascades = Cascades(self, s.node, s.ua, s.policy, s.rtp_pool, self.focus_record)
        self.mesh = Mesh(self, s.node, s.ua, s.policy)
        self.delegator = Delegator(self, self.mesh, s.node, s.ua, s.policy)

    def __repr__(self):
        return f"<Room {self.name} {len(self.legs)} calls>"

    # -- addressing ----------------------------------------------------------

    @property
    def uri(self):
        """The conference URI, parsed when first needed (a name made of a
        strange Request-URI may make it unparsable: only its uses fail)."""
        if self._uri is None:
            self._uri = URI.parse(self.conference.uri)
        return self._uri

    @property
    def name_addr(self):
        return NameAddr(self.uri)

    def contact(self, transport="UDP"):
        """Our Contact for this conference: its URI at our address over
        ``transport``, with ``isfocus`` (RFC 4579 §4)."""
        uri = self.services.ua.local_uri(self.name, transport.upper())
        return NameAddr(uri, params={"isfocus": None})

    # -- calls ---------------------------------------------------------------

    def new_leg(self, transport, rtp=None):
        """A member's call leg, with ``rtp`` or a new RTP pair
        (``PortsExhausted`` when none is free)."""
        s = self.services
        if rtp is None:
            rtp = s.rtp_pool.allocate()
        leg = CallLeg(s.ua, s.policy, self, rtp, transport)
        self.legs.append(leg)
        if not self.private:
            s.node.call_added()
        else:
            self.uncounted.add(leg)
        return leg

    @property
    def private(self):
        """An agent's two-party call (agent.py): no load, no recruiting."""
        return self.hosted is not None and not self.hosted.counts

    def count_calls(self):
        """An agent's call became a conference: its calls are load now."""
        for _ in self.uncounted:
            self.services.node.call_added()
        self.uncounted.clear()
        self.mesh.link_changed()                # our record's load
        self.mesh.maybe_recruit()

    def can_overflow(self):
        """May a newcomer be accepted beyond capacity, to be handed over?"""
        return self.services.node.within_overflow() and self.mesh.can_place()

    def is_member_user(self, user):
        """Is ``user`` (an authenticated user name) a member: one the room's
        policy names, or the user part of a member's address here?"""
        if user in self.policy.members:
            return True
        return any(URI.parse(entity).user == user for entity in self.conference.users)

    def legs_of(self, uri):
        """The live legs of member ``uri`` (its user or endpoint URI)."""
        bare = uri.replace(params={k: v for k, v in uri.params.items() if k != "method"},
                           headers=[])
        text, user = str(bare), aor(bare)
        return [leg for leg in self.legs if leg.state is not LegState.ENDED and
                not leg.in_lobby and (leg.user_entity == user or leg.endpoint_entity == text)]

    def legs_of_device(self, leg):
        """Our other calls held here with ``leg``'s member at the same Contact."""
        target = str(leg.dialog.remote_target)
        return [other for other in self.legs
                if other is not leg and other.is_ours
                and other.user_entity == leg.user_entity
                and str(other.dialog.remote_target) == target]

    def holder_of(self, uri):
        """The focus holding member ``uri`` (user or endpoint), or None."""
        for holder, record in self.mesh.replica.members().values():
            if uri in (record.user, record.endpoint):
                return holder
        return None

    def handed_off(self, leg):
        """Another focus holds ``leg``'s member now: its place is free (and
        its voice is mixed there)."""
        if leg.is_ours:
            leg.handed_off = True
            self.services.node.call_handed_off()
            self.services.audio.mix(leg)

    def set_muted(self, leg, muted):
        """Keep ``leg``'s voice out of the mix (or put it back): the API, *6."""
        if leg.muted == muted:
            return
        leg.muted = muted
        self.log.info("{conf}: {member} {event}", event="muted" if muted else "unmuted",
                      conf=self.name, member=leg.user_entity, call=leg.call_id)
        self.services.audio.mute(leg)
        self.mesh.member_changed(leg)

    # -- what calls tell us ----------------------------------------------------

    def leg_joined(self, leg):
        s = self.services
        if leg.is_cascade:                      # another focus: audio only
            n = leg.negotiated
            self.log.info("{conf}: cascade with {peer} up ({codec}, {media})", conf=self.name,
                          peer=leg.peer, codec=n and n.codec,
                          media=n.keys.suite if n and n.keys else "plain RTP", event="cascade")
            s.audio.mix(leg)
            return
        if self.policy.pin and leg.joining_method == JoiningMethod.DIALED_IN and \
                not leg.replacing_call_id and leg.replaces is None:
            self.lobby.enter(leg)               # moving members are never asked again
            return
        self._admit(leg)

    def _admit(self, leg):
        """``leg``'s caller is a member now: mixed, in the mesh and the model."""
        s = self.services
        leg.joined_at = time.time()
        replica = self.mesh.replica
        if leg.replacing_call_id:               # a handover: the same member
            for holder, record in replica.members().values():
                if record.call_id == leg.replacing_call_id:
                    leg.user_entity = record.user
                    leg.joining_method = record.joining_method
                    leg.epoch = max(leg.epoch, record.epoch + 1)
                    break
            # A call that replaces another (RFC 3891) leaves one call per
            # device: one we already have with that device goes (a takeover
            # and a handover of one member can cross).
            for other in self.legs_of_device(leg):
                other.hangup()
        entity = leg.endpoint_entity
        known = replica.member(entity)
        if replica.holds(s.node.uri, entity) or (known and known[1].user != leg.user_entity):
            # The same Contact twice here, or another member's Contact
            # (phones behind NAT share private addresses): one key per call.
            entity = f"{entity};leg={leg.dialog.local_tag}"
            leg.endpoint_entity = entity
        conference = self.conference
        if leg.user_entity not in conference.users and \
                conference.user_count >= conference.max_users:
            self.log.info("{conf}: full, dropping {member}", conf=self.name,
                          member=leg.user_entity)
            leg.hangup()
            return
        self.log.info("{conf}: {member} {event} ({how}, call {call})", event="joined",
                      conf=self.name, member=leg.user_entity, how=leg.joining_method,
                      call=leg.call_id)
        s.audio.mix(leg)
        self.mesh.member_joined(leg)
        if s.agent is not None:
            s.agent.joined(self, leg)
        if leg.provisional:
            self.delegator.hand_over(leg)

    def leg_changed(self, leg):
        self.log.info("{conf}: {member} {event} {status}", event="media", conf=self.name,
                      member=leg.user_entity, status=leg.media_status, call=leg.call_id)
        self.services.audio.mix(leg)
        if not (leg.is_cascade or leg.in_lobby):
            self.mesh.member_changed(leg)

    def leg_ended(self, leg, why, was_member):
        s = self.services
        if leg.in_lobby:                        # never a member: no trace
            was_member = False
            self.lobby.leave(leg, why)
        s.audio.mix(leg)                        # out of the mix (it ended)
        s.rtp_pool.release(leg.rtp)
        if leg.hold is not None:
            leg.hold.release()
        if leg.is_cascade:
            self.cascades.ended(leg)
            return
        if leg in self.uncounted:
            self.uncounted.discard(leg)
            self.legs.remove(leg)
        elif leg in self.legs:
            self.legs.remove(leg)
            s.node.call_removed(leg.handed_off)
        if was_member:
            self.log.info("{conf}: {member} {event} ({why}, call {call})", event="left",
                          conf=self.name, member=leg.user_entity, why=why, call=leg.call_id)
            self.mesh.member_left(leg)
        if s.agent is not None:
            s.agent.ended(self, leg)
        s.rooms.retire_if_idle(self)

    # -- the lobby of a room with a PIN (pin.py) ------------------------------

    def _lobby_done(self, leg, ok, why):
        if leg.state is not LegState.CONFIRMED:
            return
        self.lobby.log_outcome(leg, "admitted" if ok else f"failed: {why}")
        if ok:
            leg.in_lobby = False
            self._admit(leg)
        else:
            leg.hangup()                        # still in_lobby: leg_ended leaves no trace

    def digit_received(self, leg, digit):
        """A key ``leg`` pressed (RFC 4733 §2 event, or INFO dtmf-relay): its
        PIN in the lobby, else the ``*6`` code."""
        if not self.lobby.press(leg, digit) and not leg.in_lobby:
            self.services.audio.star_code(leg, digit)

    # -- what the mesh and failover ask of the room ------------------------------

    def link_up(self, peer):
        """Our subscription to focus ``peer`` is up: the cascade may dial."""
        self.cascades.link_up(peer)

    def foci_changed(self):
        """Some focus record arrived or changed (a cascade may wait for one)."""
        self.cascades.records_changed()

    def focus_record(self, uri):
        """What focus ``uri`` says of itself in the state (None: not yet)."""
        return self.mesh.replica.focus(uri)

    def link_down(self, peer):
        """Focus ``peer`` is gone (lost, failed, left): its cascade ends."""
        self.cascades.link_down(peer)

    def hand_over(self, leg, mode=HandOver.WAIT):
        """Move ``leg``'s member to another focus (delegation.py, case 1)."""
        self.delegator.hand_over(leg, mode=mode)

    def forward(self, target, referred_by, forwarded, report):
        """Pass a REFER on to a focus with room (delegation.py, case 2)."""
        self.delegator.forward(target, referred_by, forwarded, report)

    def room_elsewhere(self):
        """Has another focus we hear from room for one more member?"""
        return self.mesh.pick() is not None

    def foci(self):
        """The ids of the foci of this conference we know of: those in the
        replicated state and those we subscribe to."""
        return {f.uri for f in self.mesh.replica.foci()} | set(self.mesh.links)

    def add_candidate(self, leg, request):
        """``leg``'s INVITE (or 2xx) may advertise the multifocus package:
        then its Contact is a possible focus (a cascade's peer is a focus already)."""
        if not leg.is_cascade and request.contacts and \
                multifocus.EVENT in (request.headers.get("allow-events") or ""):
            self.mesh.add_candidate(request.contacts[0].uri, leg)

    def conference_key(self):
        """The key of this conference among agents (trust.py), made if none."""
        return self.services.trust.key_of(self)

    def refer(self, txn, request, source, leg=None):
        """A REFER for this conference (in ``leg``'s dialog, or outside one)."""
        self.services.referrals.handle(txn, request, source, self, leg)

    # -- what the focus does for the conference ----------------------------------

    def dial_out(self, target, referred_by, report, replaces=None, adopt=None, to=None,
                 srtp_profile=None):
        """Dial ``target`` into the conference (REFER, RFC 4579 §5.5).

        With ``replaces`` (a handover) the INVITE carries it (RFC 3891); a
        phone that refuses it is invited again without (the old focus then
        ends the first call with BYE).  ``adopt``: the MemberRecord of the
        member this call takes over (failover): its identity, and its
        ownership epoch + 1.  ``to``: the To header (the member's identity,
        from a handover REFER), else the target.  ``srtp_profile``: the
        member's call was SRTP on it (a handover's marker; ``adopt.srtp``
        for a takeover): offered again."""
        if adopt is not None and srtp_profile is None:
            srtp_profile = adopt.srtp
        try:
            leg = self.new_leg((target.transport or "udp").upper())
        except PortsExhausted:
            report(503, "Service Unavailable")
            return None

        def without_replaces_on_refusal(status, reason):
            if status >= 300 and status not in FINAL_REFUSALS and \
                    not self.services.node.stopping:
                self.log.info("{target} refused Replaces ({status}): inviting without",
                              target=str(target), status=status)
                self.dial_out(target, referred_by, report, adopt=adopt, to=to,
                              srtp_profile=srtp_profile)
            else:
                report(status, reason)
        if replaces:
            leg.replacing_call_id = replaces.split(";", 1)[0].strip()
        leg.dial(target, referred_by, without_replaces_on_refusal if replaces else report,
                 replaces=replaces, to=to, srtp_profile=srtp_profile)
        if adopt is not None:
            leg.user_entity, leg.joining_method = adopt.user, adopt.joining_method
            leg.epoch = adopt.epoch + 1
        return leg

    def remove_legs(self, legs, report):
        """End ``legs`` with BYE; report when the first BYE is answered (a
        stale leg of a vanished phone would make the referrer wait 32 s)."""
        ds = [leg.hangup() for leg in legs]
        defer.DeferredList(ds, fireOnOneCallback=True).addBoth(lambda _: report(200, "OK"))

    # -- the conference URI's binding (registrar.py) ------------------------------

    def bind(self, replacing=()):
        """Bind our URI (``replacing`` the Contacts of the primaries we succeed)."""
        if self.services.registrar is not None:
            self.services.registrar.register(self, remove=replacing)

    def became_primary(self, predecessor):
        """New requests to the conference URI must reach us, not ``predecessor``."""
        self.bind(replacing=(predecessor,))

    def no_longer_primary(self):
        """Our successor took the URI over (and removed our Contact)."""
        self.unbind(abandon=True)

    def unbind(self, abandon=False):
        """Remove our binding, or ``abandon`` it (stop refreshing, say nothing)."""
        if self.binding is not None:
            self.binding.abandon() if abandon else self.binding.stop()
            self.binding = None

    # -- publishing ------------------------------------------------------------

    def publish_members(self):
        """The model changed: a partial NOTIFY to members' subscriptions."""
        s = self.services
        s.notifier.changed(s.members_package, self)

    def publish_state(self):
        """Our partition changed: a NOTIFY to the foci subscribed to us."""
        s = self.services
        s.notifier.changed(s.state_package, self)

    def answer_cascade(self, txn, request, source, peer, offer, rtp):
        """An admitted cascade INVITE from focus ``peer`` (cascade.py)."""
        self.cascades.answer(txn, request, source, peer, offer, rtp)

    def leave(self):
        """Hand our members to the other foci (failover.py); a Deferred."""
        return self.mesh.failover.leave()

    def subscriber_count(self):
        return len(self.services.notifier.subscriptions(resource=self))

    # -- the end -----------------------------------------------------------------

    @property
    def idle(self):
        s = self.services
        return not (self.legs or self.conference.user_count or s.node.stopping or
                    s.notifier.watched(self) or self.mesh.links)

    def close(self):
        """End everything of this conference (the focus stops): BYE to
        every call, the binding removed, the links closed.  The Deferreds
        of the BYEs."""
        self.cascades.stop()
        self.unbind()
        ds = [leg.hangup() for leg in list(self.legs)]
        self.mesh.close()
        return ds


class Rooms:
    """The rooms of this focus, by conference name."""

    log = Logger()

    def __init__(self, node):
        self.node = node
        self.config = node.config
        self.services = None        # RoomServices, once the focus is attached
        self._rooms = {}
        self.keyed = 0              # rooms with a key of their own (trust.py)

    def __iter__(self):
        return iter(list(self._rooms.values()))

    def __len__(self):
        return len(self._rooms)

    def __contains__(self, name):
        return name in self._rooms

    def get(self, name):
        return self._rooms.get(name)

    @property
    def full(self):
        return len(self._rooms) >= self.config.max_conferences

    def for_uri(self, uri, creator=None):
        """The room an INVITE's Request-URI names, created on first use
        (only the configured rooms with ``[focus] create_rooms =
        configured``); the factory URI makes a new one (RFC 4579 §5.1).
        ``creator``, the caller's address, pays for a room that is not
        configured (``[limits] rooms_per_source``).  None if it names
        none (``refusal`` says how to answer)."""
        name = uri.user if uri.is_sip else None
        if not name:
            return None
        if self.node.role is Role.SECONDARY:    # holds no conference URI of its own
            return self._rooms.get(name)
        configured_only = self.config.create_rooms == CONFIGURED
        if name == self.config.factory_user:
            if configured_only:
                return None
            name = "conf-" + new_tag()
        room = self._rooms.get(name)
        if room is None and (name in self.config.rooms or not configured_only):
            room = self.create(name, creator)
        return room

    def existing(self, uri, configured=True):
        """The room ``uri`` names if it exists (or, with ``configured``, is
        configured: made now): what a SUBSCRIBE or a REFER may reach.
        Neither makes any other room, so no stranger can hold conference
        slots with subscriptions."""
        name = uri.user if uri.is_sip else None
        if not name or name == self.config.factory_user:
            return None
        room = self._rooms.get(name)
        if room is None and configured and name in self.config.rooms and \
                self.node.role is not Role.SECONDARY:
            room = self.create(name)
        return room

    def refusal(self, uri):
        """(status, reason) for a Request-URI ``for_uri`` found no room for."""
        name = uri.user if uri.is_sip else None
        if not name or self.node.role is Role.SECONDARY:
            return 404, "No Such Conference"
        if self.config.create_rooms == CONFIGURED:
            if name == self.config.factory_user:
                return 403, "Conference Creation Not Allowed"
            if name not in self.config.rooms:
                return 404, "No Such Conference"
        return 503, "Too Many Conferences"

    def for_focus(self, request):
        """The room a focus's multifocus SUBSCRIBE names (its To is the
        conference URI): ours, or a new replica of one held elsewhere."""
        uri = request.to.uri
        name = uri.user if uri.is_sip else None
        if not name:
            return None
        room = self._rooms.get(name)
        if room is None and not self.full:
            room = self._add(name, str(uri.replace(params={}, headers=[])))
        return room

    def create(self, name, creator=None):
        """A conference made here, with its URI bound at the registrar if
        there is one (registrar.py); None past max_conferences, when taken,
        or when ``creator`` (an address) holds its budget of rooms."""
        if self.full or name in self._rooms:
            return None
        hold = None
        if creator is not None and name not in self.config.rooms:
            hold = self.services.budgets.hold("rooms", creator)
            if hold is None:
                return None
        room = self._add(name, f"sip:{name}@{self.node.domain}")
        room.hold = hold
        room.bind()
        return room

    def set_key(self, room, key):
        """``room``'s conference key (trust.py), kept while it lives here."""
        if room.key is None:
            self.keyed += 1
        room.key = key

    def _add(self, name, uri):
        room = self._rooms[name] = Room(name, uri, self.services)
        self.log.info("conference {name} created ({uri})", name=name, uri=uri)
        return room

    def retire_if_idle(self, room):
        """Forget a conference nobody is in or watches (bounds the registry)."""
        if self._rooms.get(room.name) is room and room.idle:
            del self._rooms[room.name]
            if room.key is not None:
                room.key = None
                self.keyed -= 1
            room.unbind()
            if room.hold is not None:
                room.hold.release()
