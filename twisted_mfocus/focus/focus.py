"""The conference focus: the transaction user of ``twistd mfocus``.

RFC 4579 conferencing for user agents on top of the UA core: conference
URIs (``sip:ROOM@focus`` joins ROOM, created on first use; the factory
URI makes a new one), call legs, REFER, and the RFC 4575 conference event
package on the RFC 6665 notifier.

Rules of this module:

- It routes, the pieces act: a ``Room`` keeps one conference (room.py),
  ``CallLeg`` runs a call, ``Notifier`` runs subscriptions, ``Referrals``
  runs a REFER.  This class applies the §8.2 checks, then hands a request
  to the usage of its dialog or, by method, to the room it names.
- It builds the pieces once and gives each what it uses (``attach``).
- Every response carries Allow, Allow-Events and Supported; every Contact
  we send is a conference URI with ``isfocus`` (RFC 4579 §4).
- Every size is bounded: conferences, members per focus (``capacity``),
  subscriptions, dialogs.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ..budget import SourceBudgets
from ..conference import info, multifocus
from ..conference.model import Changes
from ..config import Role
from ..sip.dialog import pop_own_route, strict_route_fixup
from ..sip.errors import SIPError
from ..sip.ids import new_tag
from ..sip.interfaces import ITransactionUser
from ..sip.proof import Prover, load_secret
from ..sip.uas import Refused, UASPolicy
from ..sip.values import NameAddr
from .agent import Agent
from .audio import Audio
from .admission import admit_invite, answer_invite
from .call import CallLeg, LegState
from .cascade import MARKER as CASCADE
from .cascade import peer_of
from .identity import Authentication
from .interfaces import IEventPackage
from .state_package import MultifocusPackage
from .node import Node
from .pin import DTMF_TYPES
from .refer import Referrals
from . import relay
from .registrar import Registrar
from .room import Rooms, RoomServices
from .subscriptions import Notifier
from .trust import FocusTrust
from .ua import UserAgent
from .views import Views

__all__ = ["ConferenceFocus", "ConferencePackage"]


ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "SUBSCRIBE", "NOTIFY",
         "REFER", "INFO", "UPDATE", "MESSAGE")
SUPPORTED = ("replaces", "norefersub", "timer")
ACCEPT = ("application/sdp", "message/sipfrag", multifocus.CONTENT_TYPE,
          relay.CONTENT_TYPE) + DTMF_TYPES      # INFO digits (PIN entry, *6)
SHUTDOWN_RETRY = 30         # Retry-After (s) while we stop
FULL_RETRY = 60             # Retry-After (s) of a full focus


@implementer(IEventPackage)
class ConferencePackage:
    """The RFC 4575 ``conference`` event package; its resources are rooms.

    The dialog ids of the members (<call-info>, RFC 4575 §5.7.5) are enough
    to forge a Replaces: only members (by the flow of their call, or their
    digest) and proven foci see them; anyone else gets users and endpoints
    without them, or, in a room with ``subscribers = members``, 403."""

    event = "conference"
    content_type = info.CONTENT_TYPE
    between_foci = False        # its subscribers are members and watchers

    def __init__(self, rooms, trust, auth):
        self.rooms = rooms
        self.trust = trust
        self.auth = auth

    def resource(self, request, source):
        return self.rooms.existing(request.uri)     # a SUBSCRIBE makes no room

    def audience(self, request, source, room):
        if self.trust.proven(request, source) or any(
                leg.source == source and leg.is_ours for leg in room.legs):
            return MEMBERS
        user = self.auth.identity_of(request)
        if user is not None and room.is_member_user(user):
            return MEMBERS
        if room.policy.subscribers == MEMBERS:
            raise Refused(403, "Members Only", tagged=True)
        return PUBLIC

    def state(self, room, subscription):
        return info.render_full(room.conference, dialogs=subscription.audience is MEMBERS)

    def changes(self, room):
        changes = room.conference.take_changes()
        return _Partial(room.conference, changes) if changes else None

    def render_for(self, partial, subscription):
        return partial.render(subscription.audience is MEMBERS)

    def merge(self, partials):
        """Every user any of them names, as it is now (``render_partial``
        sends one that is gone as deleted)."""
        entities = dict.fromkeys(e for p in partials
                                 for e in (*p.changes.changed, *p.changes.deleted))
        return _Partial(partials[-1].conference, Changes(list(entities), []))

    def subscribed(self, subscription):
        pass


MEMBERS, PUBLIC = "members", "public"     # a conference subscriber's audience


class _Partial:
    """One batch of changes, rendered once per audience that asks."""

    __slots__ = ("conference", "changes", "_docs")

    def __init__(self, conference, changes):
        self.conference, self.changes, self._docs = conference, changes, {}

    def render(self, dialogs):
        doc = self._docs.get(dialogs)
        if doc is None:
            doc = self._docs[dialogs] = info.render_partial(self.conference, self.changes,
                                                            dialogs=dialogs)
        return doc


@implementer(ITransactionUser)
class ConferenceFocus:
    """Routes requests to legs, subscriptions, REFERs and rooms."""

    log = Logger()

    def __init__(self, config, rtp_pool, clock=None):
        self.config = config
        self.rtp_pool = rtp_pool
        self.clock = clock
        agent = config.role is Role.AGENT
        allow = ALLOW + (("REGISTER",) if agent else ())
        # An agent whose user refuses to be a focus does not offer to be one.
        events = "conference, refer" + (
            f", {multifocus.EVENT}" if not agent or config.agent_focus else "")
        standing = [("Allow", ", ".join(allow)), ("Allow-Events", events),
                    ("Supported", ", ".join(SUPPORTED))]
        # [sip] server: empty by default, so a scanner learns nothing of us.
        product = [config.server_header] if config.server_header else []
        self.policy = UASPolicy(
            allow=allow, supported=SUPPORTED, accept=ACCEPT,
            extra_headers=standing + [("Server", p) for p in product],
            request_headers=standing + [("User-Agent", p) for p in product])
        self.node = Node(config)
        self.rooms = Rooms(self.node)
        self.trust = FocusTrust(self.node, self.rooms)
        self.package = None         # the conference package, once auth exists (attach)
        self.mf_package = None      # the multifocus package (attach)
        self.views = Views(self.rooms)      # what the management API reads
        self.ua = self.notifier = self.audio = self.referrals = self.agent = self.auth = None
        self.budgets = None         # the stack's per-source budgets (budget.py)
        self._by_method = {"INVITE": self._invite, "REGISTER": self._register,
                           "SUBSCRIBE": self._subscribe, "REFER": self._refer,
                           "OPTIONS": self._options, "MESSAGE": self._message}
        self.relay = None           # another focus's moderation request (relay.py)

    def attach(self, service):
        """Called once the transports and transactions exist."""
        cfg = self.config
        self.clock = service.reactor
        self.budgets = service.budgets
        prover = Prover(load_secret(cfg.secret_file), self.clock) if cfg.secret_file else None
        self.trust.prover = prover
        self.trust.clock = self.clock
        self.ua = ua = UserAgent(service.reactor, service.transport, service.transactions,
                                 signer=self.trust.signer_for, flows=cfg.nat_flows)
        self.trust.certificate_names = service.transport.certificate_names
        self.trust.warn_if_open()
        self.node.attach(ua)
        self.audio = Audio(self.clock, cfg)
        self.auth = Authentication(cfg, self.node, self.clock, self.policy)
        self.package = ConferencePackage(self.rooms, self.trust, self.auth)
        if self.node.role is Role.AGENT:
            self.agent = Agent(cfg, ua, self.policy, self.rooms, self.rtp_pool, self.auth)
        self.mf_package = MultifocusPackage(self.trust, self.rooms, self.agent)
        self.notifier = Notifier(
            ua, self.policy, lambda room: room.contact(), [self.package, self.mf_package],
            min_interval=cfg.notify_interval, min_expires=cfg.min_expires,
            max_expires=cfg.max_expires, max_subscriptions=cfg.max_subscriptions,
            budgets=self.budgets, on_unwatched=self.rooms.retire_if_idle,
            notify_budgets=SourceBudgets(self.clock.seconds, cfg.notify_bytes_per_second,
                                         cfg.notify_burst_bytes,
                                         max_sources=cfg.budget_sources))
        self.referrals = Referrals(self.node, ua, self.policy, self.trust, self.auth)
        self.relay = relay.Relay(self.views.moderation, self.rooms, self.trust, self.policy)
        registrar = Registrar(ua, self.node, cfg.registrar) if cfg.registrar else None
        self.rooms.services = RoomServices(
            node=self.node, ua=ua, policy=self.policy, notifier=self.notifier,
            members_package=self.package, state_package=self.mf_package, audio=self.audio,
            rtp_pool=self.rtp_pool, registrar=registrar, agent=self.agent,
            referrals=self.referrals, rooms=self.rooms, budgets=self.budgets,
            trust=self.trust)

    # -- the transaction user ----------------------------------------------

    def request_received(self, txn, request, source):
        policy = self.policy
        refusal = policy.inspect(request)
        if refusal is not None:
            txn.respond(refusal)
            return
        self.trust.proven(request, source)     # checked as it came, before any fixup
        strict_route_fixup(request, self.ua.is_local)   # §16.4
        pop_own_route(request, self.ua.is_local)
        if request.to.tag:
            usage = self.ua.find_dialog(request)
            if usage is None:
                txn.respond(policy.respond(request, 481))
            elif usage.between_foci and not self.trust.trusts(request, source):
                txn.respond(policy.respond(request, 403, "Not A Trusted Focus"))
            else:
                usage.request_received(txn, request, source)
            return
        if self.node.stopping and request.method in ("INVITE", "SUBSCRIBE", "REFER"):
            txn.respond(policy.respond(request, 503, "Shutting Down", to_tag=new_tag(),
                                       headers=[("Retry-After", str(SHUTDOWN_RETRY))]))
            return
        handler = self._by_method.get(request.method)
        if handler is None:     # BYE, NOTIFY, INFO outside any dialog (§12.2.2)
            txn.respond(policy.respond(request, 481, to_tag=new_tag()))
        else:
            handler(txn, request, source)

    def _refuse(self, txn, request, status, reason, headers=()):
        txn.respond(self.policy.respond(request, status, reason, to_tag=new_tag(),
                                        headers=list(headers)))

    def _invite(self, txn, request, source):
        if CASCADE in request.headers:
            self._cascade(txn, request, source)
            return
        agent = self.agent
        if agent is not None and "replaces" not in request.headers:
            if agent.serves(request.uri):
                agent.invite(txn, request, source)
                return
            if not self._ours(request.uri):                 # for someone elsewhere
                if agent.places(request):
                    agent.call_out(txn, request, source)
                else:
                    self._refuse(txn, request, 403, "Not Relaying")
                return
            if request.uri.user not in self.rooms:          # an agent makes no rooms
                # The answer of a served user who is not registered: a
                # stranger cannot tell served users from others.
                self._refuse(txn, request, 480, "Temporarily Unavailable")
                return
        replaced = identity = None
        if "replaces" in request.headers:
            replaced = self._replaced_leg(request)
            if replaced is None:
                self._refuse(txn, request, 481, "No Call To Replace")
                return
            if not self._may_replace(replaced, request, source):
                self._refuse(txn, request, 403, "Not Allowed To Replace That Call")
                return
            room = replaced.room
        else:
            room = self.rooms.for_uri(request.uri, creator=source.host)
            if room is None:
                self._refuse(txn, request, *self.rooms.refusal(request.uri))
                return
            admitted, identity = self._admits(txn, request, source, room)
            if not admitted:
                self.rooms.retire_if_idle(room)
                return
        provisional = replaced is None and self.node.is_full()
        if provisional and not room.can_overflow():
            self._refuse(txn, request, 486, "Conference Focus Full",
                         [("Retry-After", str(FULL_RETRY))])
            self.rooms.retire_if_idle(room)
            return
        hold = None
        if replaced is None:            # a replacing call takes the place of its own
            hold = self.budgets.hold("calls", source.host)
            if hold is None:            # [limits] calls_per_source
                self._refuse(txn, request, 503, "Too Many Calls From Your Address",
                             [("Retry-After", str(FULL_RETRY))])
                self.rooms.retire_if_idle(room)
                return
        try:
            offer, rtp = admit_invite(request, self.rtp_pool)
        except Refused as refusal:
            if hold is not None:
                hold.release()
            txn.respond(refusal.response(self.policy, request))
            self.rooms.retire_if_idle(room)
            return
        leg = room.new_leg(source.transport, rtp)
        leg.hold = hold
        leg.identity = identity if replaced is None else replaced.identity
        leg.replaces = replaced
        if replaced is not None:
            leg.contact = replaced.contact      # an agent's call keeps its plain Contact
        leg.provisional = provisional
        room.add_candidate(leg, request)
        answer_invite(leg, txn, request, source, offer, self.policy)

    def _cascade(self, txn, request, source):
        """A cascade INVITE from another focus (cascade.py)."""
        room = self.rooms.get(request.uri.user or "")
        if not self.trust.trusts(request, source, room):
            self._refuse(txn, request, 403, "Cascade From Untrusted Node")
            return
        if room is None:
            self._refuse(txn, request, 404, "No Such Conference")
            return
        try:
            peer = peer_of(request)
        except (SIPError, ValueError) as e:
            self._refuse(txn, request, 400, f"Bad {CASCADE}: {e}")
            return
        try:
            offer, rtp = admit_invite(request, self.rtp_pool)
        except Refused as refusal:
            txn.respond(refusal.response(self.policy, request))
            return
        room.answer_cascade(txn, request, source, peer, offer, rtp)

    def _admits(self, txn, request, source, room):
        """May this newcomer join ``room`` (its ``[room:NAME]`` policy, an
        agent's call policy)?  (admitted, the authenticated user or None);
        not admitted: the request was answered (403, 486, a challenge)."""
        policy = room.policy
        user = None
        if policy.locked:
            self._refuse(txn, request, 403, "Conference Locked")
            return False, None
        if policy.members:                      # authenticated members only
            if not self.auth.available:
                self._refuse(txn, request, 403, "Members Only")
                return False, None
            user = self.auth.identify(txn, request, source)
            if user is None:
                return False, None
            if user not in policy.members:
                self._refuse(txn, request, 403, "Members Only")
                return False, None
        if policy.max_members is not None and \
                room.conference.user_count >= policy.max_members:
            self._refuse(txn, request, 486, "Conference Full",
                         [("Retry-After", str(FULL_RETRY))])
            return False, None
        if self.agent is not None and not self.agent.admits(txn, request, source, room):
            return False, None
        return True, user

    def _may_replace(self, leg, request, source):
        """RFC 3891 §6: only the party of the replaced dialog may replace it:
        its requests' flow (the source its dialog's requests come from) or,
        where it authenticated, the same user; or a proven focus."""
        if leg.source == source:
            return True
        if leg.identity is not None and self.auth.identity_of(request) == leg.identity:
            return True
        if self.agent is not None and self.agent.moves(leg, request):
            return True
        return self.trust.proven(request, source, leg.room)

    def _replaced_leg(self, request):
        """The confirmed call a ``Replaces`` header names (RFC 3891 §3: its
        to-tag is our tag, its from-tag the peer's), or None."""
        call_id, *params = [p.strip() for p in request.headers.get("replaces").split(";")]
        tags = dict(p.partition("=")[::2] for p in params)
        usage = self.ua.dialogs.get((call_id, tags.get("to-tag"), tags.get("from-tag")))
        if isinstance(usage, CallLeg) and usage.state is LegState.CONFIRMED:
            return usage
        return None

    def _ours(self, uri):
        """Does ``uri`` name this focus (a listener, or the configured domain)?"""
        hostport = uri.host + (f":{uri.port}" if uri.port else "")
        return self.ua.is_local(uri) or hostport == self.node.domain

    def _register(self, txn, request, source):
        self.agent.register(txn, request, source)   # REGISTER is allowed to an agent only

    def _subscribe(self, txn, request, source):
        self.notifier.subscribe(txn, request, source)

    def _refer(self, txn, request, source):
        self.referrals.handle(txn, request, source,
                              self.rooms.existing(request.uri, configured=False))

    def _message(self, txn, request, source):
        """MESSAGE (RFC 3428): a focus of a conference asking us to moderate
        our part of it (relay.py); anyone else gets 403."""
        self.relay.receive(txn, request, source)

    def _options(self, txn, request, source):
        """Answer like an INVITE would (RFC 3261 §11.2), without creating."""
        headers = self.policy.capability_headers()
        name = request.uri.user
        if name:
            uri = self.ua.local_uri(name, source.transport)
            if name not in self.rooms and name != self.config.factory_user and \
                    self.rooms.full:
                self._refuse(txn, request, 503, "Too Many Conferences")
                return
            headers.append(("Contact", str(NameAddr(uri, params={"isfocus": None}))))
            if self.node.is_full():
                self._refuse(txn, request, 486, "Conference Focus Full", headers)
                return
        txn.respond(self.policy.respond(request, 200, to_tag=new_tag(), headers=headers))

    def exempt(self, request, source):
        """A trusted focus is free of its address's request budget."""
        return self.ua is not None and self.trust.trusts(request, source)

    def cancel_received(self, txn, cancel, source, invite_txn):
        # §9.2: we answer INVITEs at once (but an agent's ringing calls), so
        # the CANCEL mostly only gets its 200 (481 when it matches nothing).
        txn.respond(self.policy.respond(cancel, 200 if invite_txn else 481,
                                        to_tag=new_tag()))
        if invite_txn is not None and self.agent is not None:
            self.agent.cancelled(invite_txn)

    def ack_received(self, ack, source):
        """A 2xx ACK (§13.3.1.4, §17.2.3): to the leg of its dialog."""
        usage = self.ua.find_dialog(ack) if ack.to.tag else None
        if isinstance(usage, CallLeg):
            usage.ack_received(ack, source)

    def transaction_error(self, txn, reason):
        self.log.info("{method} from {peer} failed: {why}", method=txn.request.method,
                      peer=str(txn.source), why=reason)

    def stray_response(self, response, source):
        self.log.debug("stray response {status} from {peer}", status=response.status,
                       peer=str(source))

    # -- shutdown --------------------------------------------------------

    def shutdown(self):
        """Leave: hand the members of multi-focus conferences to other foci
        (failover.py), then end every other call with BYE and every
        subscription with a final NOTIFY; Deferred firing when all were
        answered (or failed)."""
        self.node.stopping = True
        leaving = [room.leave() for room in self.rooms]
        done = defer.Deferred()
        d = defer.DeferredList(leaving, consumeErrors=True)
        d.addCallback(lambda _: self._end_everything()).addBoth(done.callback)
        return done

    def _end_everything(self):
        self.audio.stop()
        ds = [self.notifier.terminate_all("noresource")]
        for room in self.rooms:
            ds += room.close()
        self.log.info("shutting down: {calls} calls, {subs} subscriptions",
                      calls=self.node.load, subs=self.notifier.count)
        return defer.DeferredList(ds, consumeErrors=True)
