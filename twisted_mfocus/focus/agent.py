"""Agent mode: mfocus carries the calls of the users it serves, and turns
a two-party call into a conference when a third party calls (docs/design.md,
"Agent mode": 302 + isfocus).

- **Registrar** (RFC 3261 §10.3), for the configured users only: every
  REGISTER is challenged (401, identity.py; §10.3 step 3), whoever it
  names, so a stranger learns nothing of who is served; then only a served
  user may bind, and only its own address (403 otherwise).  Bindings expire; at most ``max_bindings`` per user;
  ``Contact: *`` with ``Expires: 0`` removes them all.
- **B2BUA**: an INVITE for a served user rings the user's registered
  phone (the most recent binding): the caller hears 180 and gets 200 once
  the phone answers (or the phone's failure).  A served user's own calls
  (an INVITE from its registered phone for someone elsewhere: mfocus is
  its outbound proxy) go out the same way, as the user's address of
  record, once its digest proves it (407, as a proxy would, §22.3): never
  by From or by source address; INVITEs from anyone else for addresses
  elsewhere get 403 (no open relay).  Both calls end at mfocus
  and are the two members of a *call*: a conference of two whose mixer
  relays their audio, with a plain Contact (no isfocus) in each.  When one
  side hangs up, the other gets BYE.  A served user with no binding and
  a user nobody serves both get 480 (no oracle of who is served).
- **Escalation**: a new INVITE for a served user who is in a call gets
  ``302 Moved Temporarily`` with ``Contact: <sip:conf-…@us>;isfocus`` and
  ``Expires`` (the call's conference URI).  When the third party INVITEs
  that URI, the call becomes an ordinary conference: the new member joins
  the mixer, and the two first calls get a re-INVITE whose Contact is the
  conference URI with ``isfocus`` (RFC 4579 §4), so the phones learn they
  are in a conference; nobody re-dials.  A user in a conference it hosts
  keeps being redirected there (or gets 486: ``when_hosting = busy``).
  Who may come in that way is the user's policy (``[agent] escalate``):
  ``anyone`` who has the URI while the redirect is fresh,
  ``authenticated`` users (401 to others), or ``nobody`` (486, no
  redirect: the call stays private).
- **Recruitment** (docs/design.md, "Peer-to-peer"): a conference a served
  user is in may make this agent one of its foci.  Agents share no secret,
  so the recruiting focus proves itself by the user's call: its SUBSCRIBE
  names that call in ``Target-Dialog`` (RFC 4538 §4: "the sender is on
  the other side of that dialog"), comes over the call's flow, and names
  a conference at the address the call is with; it carries the
  conference's key (trust.py), which every later request between the
  conference's foci proves.  Anything else is 403, the same answer
  whether or not such a call exists; ``[agent] focus = no``: 403 always.
- A user's two-party call is not load: ``[agent] focus_capacity`` counts
  the members of conferences only (``Hosted.counts``).  When a focus of
  the conference moves the user's call (a handover, a takeover: INVITE
  with Replaces, focus.py), the call goes on with the new leg.
"""

import enum
import time

from twisted.logger import Logger

from ..media.rtp import PortsExhausted
from ..sip.address import DEFAULT_PORTS
from ..sip.dialog import parse_target_dialog
from ..sip.errors import SIPError
from ..sip.ids import new_tag
from ..sip.uas import Refused
from ..sip.values import NameAddr
from .admission import admit_invite, answer_invite
from .call import CallLeg, LegState
from .identity import PROXY_AUTH, UNAUTHORIZED
from .node import focus_id
from .trust import KEY_HEADER, ConferenceKey

__all__ = ["Agent", "Hosted", "Kind"]

MAX_EXPIRES = 3600          # seconds a binding may last at most
BUSY = "busy"               # [agent] when_hosting: 486 once hosting a conference
NOBODY, AUTHENTICATED = "nobody", "authenticated"   # [agent] escalate


class Kind(enum.Enum):
    CALL = "call"               # two parties
    CONFERENCE = "conference"   # a third came: an ordinary conference


class Hosted:
    """What the agent keeps of a room it made for a user's call
    (``Room.hosted``)."""

    __slots__ = ("host", "kind", "open_until")

    def __init__(self, host):
        self.host = host            # the served user
        self.kind = Kind.CALL
        self.open_until = 0.0       # a redirected caller may join until then

    @property
    def counts(self):
        """Are its calls load?  A conference's are; a two-party call's not."""
        return self.kind is Kind.CONFERENCE


class Agent:
    """The registrar and B2BUA of the served users."""

    log = Logger()

    def __init__(self, config, ua, policy, rooms, rtp_pool, auth):
        self.ua = ua
        self.policy = policy
        self.rooms = rooms
        self.rtp_pool = rtp_pool
        self.auth = auth
        self.escalate = config.agent_escalate
        self.users = set(config.agent_users)
        self.when_hosting = config.agent_when_hosting
        self.redirect_expires = config.agent_redirect_expires
        self.max_bindings = config.agent_max_bindings
        self.focus = config.agent_focus
        self.bindings = {}          # user -> {contact text: (NameAddr, expires at)}
        self.calls = {}             # user -> the Room of the user's call / conference
        self.ringing = {}           # caller's INVITE transaction -> (request, tag, legs)

    # -- registrar ---------------------------------------------------------------

    def register(self, txn, request, source):
        """A REGISTER: challenged whoever it names, so a stranger cannot tell
        served users from others (as Asterisk's ``alwaysauthreject``); then
        only a served user, for its own address."""
        respond = self.policy.respond
        user = request.to.uri.user
        if not self._proves(txn, request, source, user, UNAUTHORIZED):
            return
        try:
            default = int(request.headers.get("expires") or MAX_EXPIRES)
            contacts = request.contacts
        except (ValueError, SIPError) as e:
            txn.respond(respond(request, 400, f"Bad REGISTER: {e}", to_tag=new_tag()))
            return
        now = time.time()
        bound = self.bindings.setdefault(user, {})
        for contact in contacts:
            if contact.wildcard:                # §10.2.2: remove all (Expires: 0)
                bound.clear()
                continue
            try:
                expires = int(contact.params.get("expires", default))
            except ValueError:
                txn.respond(respond(request, 400, "Bad Contact expires", to_tag=new_tag()))
                return
            key = str(contact.uri)
            if expires <= 0:
                bound.pop(key, None)
            else:
                bound[key] = (NameAddr(contact.uri), now + min(expires, MAX_EXPIRES))
        self._expire(user, now)
        if len(bound) > self.max_bindings:      # keep the newest
            for key in sorted(bound, key=lambda k: bound[k][1])[:-self.max_bindings]:
                del bound[key]
        headers = [("Contact", f"{addr};expires={int(until - now)}")
                   for addr, until in bound.values()]
        txn.respond(respond(request, 200, to_tag=new_tag(), headers=headers))

    def _proves(self, txn, request, source, user, status):
        """Does ``request`` carry served ``user``'s own digest?  False after
        answering it (a challenge with ``status``, or 403)."""
        who = self.auth.identify(txn, request, source, status)
        if who is None:
            return False                        # challenged (or refused)
        if user not in self.users or who != user:
            txn.respond(self.policy.respond(request, 403, "Not Your Address",
                                            to_tag=new_tag()))
            return False
        return True

    def _expire(self, user, now):
        bound = self.bindings.get(user, {})
        for key in [k for k, (_, until) in bound.items() if until <= now]:
            del bound[key]

    def phone_of(self, user):
        """The user's most recently registered Contact, or None."""
        self._expire(user, time.time())
        bound = self.bindings.get(user)
        if not bound:
            return None
        return max(bound.values(), key=lambda b: b[1])[0].uri

    # -- calls for served users ------------------------------------------------------

    def serves(self, uri):
        return uri.is_sip and uri.user in self.users

    def invite(self, txn, request, source):
        """An INVITE whose Request-URI names a served user."""
        respond = self.policy.respond
        user = request.uri.user
        current = self.calls.get(user)
        if current is not None and current.legs:
            hosted = current.hosted
            if hosted.kind is Kind.CONFERENCE and self.when_hosting == BUSY or \
                    self.escalate == NOBODY:
                reason = "Busy Here" if self.escalate == NOBODY else "Busy In A Conference"
                txn.respond(respond(request, 486, reason, to_tag=new_tag()))
                return
            hosted.open_until = time.time() + self.redirect_expires
            self.log.info("{user} is busy: redirecting to {uri}", user=user,
                          uri=str(current.uri), event="redirect")
            txn.respond(respond(request, 302, "Moved Temporarily", to_tag=new_tag(), headers=[
                ("Contact", f"<{current.uri}>;isfocus"),
                ("Expires", str(self.redirect_expires))]))
            return
        phone = self.phone_of(user)
        if phone is None:
            txn.respond(respond(request, 480, "Temporarily Unavailable", to_tag=new_tag()))
            return
        to = str(NameAddr(request.uri.replace(params={}, headers=[])))
        self._bridge(txn, request, source, user, phone, request.from_, to)

    def places(self, request):
        """Does ``request`` claim to be a served user's own call (From)?"""
        from_uri = request.from_.uri
        return from_uri.is_sip and from_uri.user in self.users

    def call_out(self, txn, request, source):
        """A served user's own call: to its target, as the user's AOR, once
        the user's digest proves it is the user (407)."""
        respond = self.policy.respond
        user = request.from_.uri.user
        if not self._proves(txn, request, source, user, PROXY_AUTH):
            return
        current = self.calls.get(user)
        if current is not None and current.legs:
            txn.respond(respond(request, 486, "Already In A Call", to_tag=new_tag()))
            return
        aor = NameAddr(request.from_.uri.replace(params={}, headers=[]),
                       display=request.from_.display)
        self._bridge(txn, request, source, user, request.uri.replace(headers=[]), aor,
                     str(NameAddr(request.uri.replace(params={}, headers=[]))))

    def _bridge(self, txn, request, source, user, target, from_addr, to):
        """Answer ``request`` once ``target`` answers: two legs of one call."""
        respond = self.policy.respond
        try:
            offer, rtp = admit_invite(request, self.rtp_pool)
        except Refused as refusal:
            txn.respond(refusal.response(self.policy, request))
            return
        room = self.rooms.create("conf-" + new_tag())
        if room is None:
            self.rtp_pool.release(rtp)
            txn.respond(respond(request, 503, "Too Many Conferences", to_tag=new_tag()))
            return
        room.hosted = Hosted(user)
        ours = NameAddr(self.ua.local_uri(user, source.transport))
        caller = room.new_leg(source.transport, rtp)
        try:
            callee = room.new_leg((target.transport or "udp").upper())
        except PortsExhausted:
            txn.respond(respond(request, 503, "Out Of Media Ports", to_tag=new_tag()))
            caller.end("no media port for the called side")
            return
        self.calls[user] = room
        caller.contact = callee.contact = ours
        room.add_candidate(caller, request)
        tag = new_tag()
        txn.respond(respond(request, 180, "Ringing", to_tag=tag, headers=[("Contact", str(ours))]))
        self.ringing[txn] = (request, tag, caller, callee)

        def answered(status, reason):
            if status < 200 or self.ringing.pop(txn, None) is None:
                return                          # ringing, or the caller cancelled
            if status >= 300:
                txn.respond(respond(request, status, reason, to_tag=tag,
                                    headers=_redirect(status, callee.refusal)))
                caller.end(f"the called side answered {status}")
                return
            if not answer_invite(caller, txn, request, source, offer, self.policy,
                                 local_tag=tag):
                callee.hangup()
        callee.dial(target, None, answered, to=to, from_addr=from_addr)

    def cancelled(self, invite_txn):
        """The caller CANCELled while the phone rang (RFC 3261 §9.2): 487 to
        its INVITE, and the ringing phone is cancelled too.  False if that
        INVITE is not one of ours ringing."""
        pending = self.ringing.pop(invite_txn, None)
        if pending is None:
            return False
        request, tag, caller, callee = pending
        self.log.info("{conf}: the caller cancelled: 487, cancelling the phone",
                      conf=caller.conference.name, event="cancelled")
        invite_txn.respond(self.policy.respond(request, 487, "Request Terminated", to_tag=tag))
        caller.end("cancelled by the caller")      # which cancels the callee (ended)
        return True

    # -- what happens to calls ----------------------------------------------------------

    def joined(self, room, leg):
        """A leg of ``room`` is in: a third party in a call escalates it."""
        hosted = room.hosted
        if hosted is None or hosted.kind is not Kind.CALL:
            return
        if leg.replaces is not None:            # the same call, moved
            return
        legs = [other for other in room.legs if other is not leg and other.replaces is None]
        if len(legs) < 2:                       # one of the first two
            return
        hosted.kind = Kind.CONFERENCE
        room.count_calls()
        contact = room.contact()
        self.log.info("{conf}: {host}'s call is a conference now", conf=room.name,
                      host=hosted.host, event="escalated")
        for other in legs:
            if other.contact is not None:
                other.retarget(contact)

    def ended(self, room, leg):
        """A leg ended: in a call, the other side is hung up too."""
        hosted = room.hosted
        if hosted is None:
            return
        left = [other for other in room.legs if other.state is not LegState.ENDED]
        if any(other.replaces is leg for other in left):
            return                              # replaced: the call goes on
        if hosted.kind is Kind.CALL:
            for other in left:
                other.hangup()
        if not left:
            room.hosted = None
            if self.calls.get(hosted.host) is room:
                del self.calls[hosted.host]

    def admits(self, txn, request, source, room):
        """May a new caller join ``room`` by its URI?  A call only while its
        redirect is fresh, and by the user's policy (``escalate``); False
        after answering the request (403, or a challenge)."""
        hosted = room.hosted
        if hosted is None or hosted.kind is not Kind.CALL:
            return True
        if hosted.open_until < time.time() or self.escalate == NOBODY:
            txn.respond(self.policy.respond(request, 403, "Private Call", to_tag=new_tag()))
            return False
        if self.escalate == AUTHENTICATED:
            return self.auth.identify(txn, request, source) is not None
        return True

    # -- recruitment -------------------------------------------------------------------

    def recruited(self, request, source, rooms):
        """May the focus sending this multifocus SUBSCRIBE make us a focus of
        the conference in its To?  Its key if so; ``Refused`` if not (403 the
        same whether or not the call it names exists)."""
        if not self.focus:
            raise Refused(403, "Not Taking Conferences", tagged=True)
        value = request.headers.get("target-dialog")
        if value is None:
            raise Refused(403, "Not A Trusted Focus", tagged=True)
        try:
            ids = parse_target_dialog(value)
        except SIPError as e:
            raise Refused(400, e.reason, tagged=True)
        leg = self.ua.dialogs.get(ids)
        conference = request.to.uri
        if not (isinstance(leg, CallLeg) and leg.state is LegState.CONFIRMED
                and leg.room.private and conference.user not in rooms
                and _same_host(leg.dialog.remote_target, conference)
                and _same_flow(leg, source)):
            raise Refused(403, "Not A Trusted Focus", tagged=True)
        key = ConferenceKey.parse(request.headers.get(KEY_HEADER), self.ua.clock)
        self.log.info("{user}'s conference {uri} makes us a focus", event="recruited_here",
                      user=leg.room.hosted.host, uri=str(conference))
        return key

    def moves(self, leg, request):
        """May ``request`` (an INVITE with Replaces for ``leg``) move a served
        user's call?  Yes from the conference the call is with (its From
        is the URI the call's far end is, as a focus that takes the call
        over writes it: docs/design.md, "Interception"): what a phone
        accepts too (RFC 3891 §6 leaves the policy to the UA)."""
        return leg.room.private and leg.dialog is not None and \
            _same_resource(leg.dialog.remote_target, request.from_.uri)


def _redirect(status, response):
    """The headers of a redirect to pass on to the caller (RFC 3261
    §21.3: its Contacts, with their parameters such as ``isfocus``, and
    Expires): the caller follows it itself."""
    if not 300 <= status < 400 or response is None:
        return []
    headers = [("Contact", value) for value in response.headers.lines("contact")]
    expires = response.headers.get("expires")
    return headers + ([("Expires", expires)] if expires else [])


def _same_host(uri, other):
    """Is the conference ``other`` at the focus the call's far end (``uri``)
    is (node.focus_id: host and port, the default port filled in)?  Its name
    is that focus's to choose: it may not have told the call yet (the
    re-INVITE that does may come after the SUBSCRIBE)."""
    return uri is not None and other.is_sip and bool(other.user) and \
        focus_id(uri) == focus_id(other)


def _same_resource(uri, other):
    """Do two SIP URIs name the same user at the same focus?"""
    return _same_host(uri, other) and uri.user == other.user


def _same_flow(leg, source):
    """Does ``source`` send over ``leg``'s flow: where the far end's requests
    in the call come from, else where ours go (its first route or its
    target; any port of that host over a connection)?"""
    if leg.source is not None:
        return leg.source == source
    dialog = leg.dialog
    hop = dialog.route_set[0].uri if dialog.route_set else dialog.remote_target
    transport = (hop.params.get("transport") or leg.transport or "udp").upper()
    if source.transport != transport or hop.host.strip("[]") != source.host:
        return False
    return source.reliable or (hop.port or DEFAULT_PORTS.get(transport, 5060)) == source.port
