"""Agent mode (issue 7): mfocus carries the calls of the users it serves,
and turns a two-party call into a conference when a third party calls
(seed-design, "Background", way 2: 302 + isfocus).

- **Registrar** (RFC 3261 §10.3), for the configured users only: REGISTER
  for anyone else gets 403.  Bindings expire; at most ``max_bindings``
  per user; ``Contact: *`` with ``Expires: 0`` removes them all.
- **B2BUA**: an INVITE for a served user rings the user's registered
  phone (the most recent binding): the caller hears 180 and gets 200 once
  the phone answers (or the phone's failure).  A served user's own calls
  (an INVITE from its registered phone for someone elsewhere: mfocus is
  its outbound proxy) go out the same way, as the user's address of
  record; INVITEs from anyone else for addresses elsewhere get 403 (no
  open relay).  Both calls end at mfocus
  and are the two members of a *call*: a conference of two whose mixer
  relays their audio, with a plain Contact (no isfocus) in each.  When one
  side hangs up, the other gets BYE.  Unknown users: 404; a served user
  with no binding: 480.
- **Escalation**: a new INVITE for a served user who is in a call gets
  ``302 Moved Temporarily`` with ``Contact: <sip:conf-…@us>;isfocus`` and
  ``Expires`` (the call's conference URI).  When the third party INVITEs
  that URI, the call becomes an ordinary conference: the new member joins
  the mixer, and the two first calls get a re-INVITE whose Contact is the
  conference URI with ``isfocus`` (RFC 4579 §4), so the phones learn they
  are in a conference; nobody re-dials.  A user in a conference it hosts
  keeps being redirected there (or gets 486: ``when_hosting = busy``).
"""

import time

from twisted.logger import Logger

from ..media.rtp import PortsExhausted
from ..media.sdp import SDPError
from ..sip.errors import SIPError
from ..sip.ids import new_tag
from ..sip.values import NameAddr
from .call import parse_offer

__all__ = ["Agent"]


class _Hosted:
    """What the agent keeps of a conference it made for a user's call."""

    __slots__ = ("host", "kind", "open_until")

    def __init__(self, host):
        self.host = host            # the served user
        self.kind = "call"          # "call" (two parties) -> "conference"
        self.open_until = 0.0       # a redirected caller may join until then


class Agent:
    """The registrar and B2BUA of the served users."""

    log = Logger()

    def __init__(self, focus, config):
        self.focus = focus
        self.users = set(config.agent_users)
        self.when_hosting = config.agent_when_hosting
        self.redirect_expires = config.agent_redirect_expires
        self.max_bindings = config.agent_max_bindings
        self.bindings = {}          # user -> {contact text: (NameAddr, expires at)}
        self.calls = {}             # user -> Conference of the user's call / conference
        self.hosted = {}            # that Conference -> _Hosted
        self.ringing = {}           # caller's INVITE transaction -> (request, tag, legs)

    # -- registrar ---------------------------------------------------------------

    def register(self, txn, request, source):
        respond = self.focus.policy.respond
        user = request.to.uri.user
        if user not in self.users:
            txn.respond(respond(request, 403, "Not A User Served Here", to_tag=new_tag()))
            return
        try:
            default = int(request.headers.get("expires") or 3600)
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
                bound[key] = (NameAddr(contact.uri), now + min(expires, 3600))
        self._expire(user, now)
        if len(bound) > self.max_bindings:      # keep the newest
            for key in sorted(bound, key=lambda k: bound[k][1])[:-self.max_bindings]:
                del bound[key]
        headers = [("Contact", f"{addr};expires={int(until - now)}")
                   for addr, until in bound.values()]
        txn.respond(respond(request, 200, to_tag=new_tag(), headers=headers))

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
        focus, respond = self.focus, self.focus.policy.respond
        user = request.uri.user
        current = self.calls.get(user)
        if current is not None and focus.legs.get(current):
            hosted = self.hosted[current]
            if hosted.kind == "conference" and self.when_hosting == "busy":
                txn.respond(respond(request, 486, "Busy In A Conference", to_tag=new_tag()))
                return
            hosted.open_until = time.time() + self.redirect_expires
            self.log.info("{user} is busy: redirecting to {uri}", user=user, uri=current.uri,
                          event="redirect")
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

    def calls_out(self, request, source):
        """The served user placing ``request`` from its registered phone,
        or None (then it is no call of ours to carry)."""
        user = request.from_.uri.user if request.from_.uri.is_sip else None
        if user not in self.users:
            return None
        self._expire(user, time.time())
        for addr, _ in self.bindings.get(user, {}).values():
            uri = addr.uri
            if uri.host == source.host and (uri.port or 5060) == source.port:
                return user
        return None

    def call_out(self, txn, request, source, user):
        """A served user's own call: to its target, as the user's AOR."""
        respond = self.focus.policy.respond
        if self.calls.get(user) is not None and self.focus.legs.get(self.calls[user]):
            txn.respond(respond(request, 486, "Already In A Call", to_tag=new_tag()))
            return
        aor = NameAddr(request.from_.uri.replace(params={}, headers=[]),
                       display=request.from_.display)
        self._bridge(txn, request, source, user, request.uri.replace(headers=[]), aor,
                     str(NameAddr(request.uri.replace(params={}, headers=[]))))

    def _bridge(self, txn, request, source, user, target, from_addr, to):
        """Answer ``request`` once ``target`` answers: two legs of one call."""
        focus, respond = self.focus, self.focus.policy.respond
        try:
            offer = parse_offer(request)
        except SDPError as e:
            txn.respond(respond(request, 400, e.reason, to_tag=new_tag()))
            return
        name = "conf-" + new_tag()
        conference = focus.new_conference(name)
        if conference is None:
            txn.respond(respond(request, 503, "Too Many Conferences", to_tag=new_tag()))
            return
        self.hosted[conference] = _Hosted(user)
        ours = NameAddr(focus.ua.local_uri(user, source.transport))
        try:
            caller = focus.new_leg(conference, source.transport)
            callee = focus.new_leg(conference, (target.transport or "udp").upper())
        except PortsExhausted:
            txn.respond(respond(request, 503, "Out Of Media Ports", to_tag=new_tag()))
            return
        self.calls[user] = conference
        caller.contact = callee.contact = ours
        tag = new_tag()
        txn.respond(respond(request, 180, "Ringing", to_tag=tag, headers=[("Contact", str(ours))]))
        self.ringing[txn] = (request, tag, caller, callee)

        def answered(status, reason):
            if status < 200 or self.ringing.pop(txn, None) is None:
                return                          # ringing, or the caller cancelled
            if status >= 300:
                txn.respond(respond(request, status, reason, to_tag=tag))
                caller._end(f"the called side answered {status}")
                return
            try:
                caller.accept(txn, request, source, offer, local_tag=tag)
            except (SDPError, SIPError) as e:
                txn.respond(respond(request, 488, getattr(e, "reason", str(e)), to_tag=tag))
                caller._end("no acceptable media")
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
        invite_txn.respond(self.focus.policy.respond(request, 487, "Request Terminated",
                                                     to_tag=tag))
        caller._end("cancelled by the caller")     # which cancels the callee (ended)
        return True

    # -- what happens to calls ----------------------------------------------------------

    def joined(self, conference, leg):
        """A leg of ``conference`` is in: a third party in a call escalates it."""
        hosted = self.hosted.get(conference)
        if hosted is None or hosted.kind != "call":
            return
        legs = [other for other in self.focus.legs.get(conference, ()) if other is not leg]
        if len(legs) < 2:                       # one of the first two
            return
        hosted.kind = "conference"
        contact = self.focus.contact(conference)
        self.log.info("{conf}: {host}'s call is a conference now", conf=conference.name,
                      host=hosted.host, event="escalated")
        for other in legs:
            if other.contact is not None:
                other.retarget(contact)

    def ended(self, conference, leg):
        """A leg ended: in a call, the other side is hung up too."""
        hosted = self.hosted.get(conference)
        if hosted is None:
            return
        left = [other for other in self.focus.legs.get(conference, ()) if other.state != "ended"]
        if hosted.kind == "call":
            for other in left:
                other.hangup()
        if not left:
            del self.hosted[conference]
            if self.calls.get(hosted.host) is conference:
                del self.calls[hosted.host]

    def admits(self, conference):
        """May a new caller join ``conference`` by its URI?  A call only
        while its redirect is fresh."""
        hosted = self.hosted.get(conference)
        return hosted is None or hosted.kind != "call" or hosted.open_until >= time.time()
