"""Call legs: one member's INVITE dialog with the focus (RFC 3261 §13–15).

The focus is a B2BUA toward each member: UAS for a dial-in, UAC for a
dial-out (REFER).  A ``CallLeg`` owns its dialog, its RTP endpoint and its
SDP session (RFC 3264 offer/answer, including the late offer answered in
the ACK), and tells its room when the member is in (``leg_joined``) and
when it is gone (``leg_ended``).  Everything a member sends inside the call
(re-INVITE, BYE, INFO, OPTIONS, REFER) arrives at ``request_received``.

Rules of this module:

- A leg counts as a member from the moment its dialog is confirmed (ACK
  received, or ACK sent for a dial-out; in a room with a PIN, once it is
  out of the lobby: ``in_lobby``) until it ends; it ends exactly once
  (``end``), releasing its RTP port and dialog whatever the reason.  Its
  state changes in ``_set_state`` only.
- A dial-in INVITE is admitted in one way for members, cascades and an
  agent's calls (admission.py).
- A 2xx we send is retransmitted until ACKed; no ACK within 64*T1 ends the
  call with BYE (§13.3.1.4).
- A call with a session timer (RFC 4028, session_timer.py) is refreshed by
  re-INVITE or UPDATE (RFC 3311); a lapsed one ends with BYE.
"""

import enum

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ..conference.model import JoiningMethod
from ..media.sdp import (
    NOT_ACCEPTABLE_HERE,
    SDPError,
    SessionDescription,
    accept_answer,
    warning_headers,
)
from ..media.srtp import NoSecureOffer
from ..sip.dialog import Dialog, DialogError, uas_response_headers
from ..sip.errors import SIPError
from ..sip.headers import Headers
from ..sip.ids import new_call_id, new_tag
from ..sip.message import MAX_FORWARDS, Request
from ..sip.uas import Refused, allows
from ..sip.values import NameAddr
from ..tracing import TRACE
from .interfaces import IDialogUsage
from .offers import CallMedia
from .pin import info_digit
from .qualify import Qualifier
from .session_timer import SessionTimer, for_answer, negotiate, response_headers
from .ua import Retransmitter

__all__ = ["CallLeg", "LegState", "aor", "parse_offer", "SDP"]

SDP = "application/sdp"


class LegState(enum.Enum):
    EARLY = "early"             # INVITE under way
    CONFIRMED = "confirmed"     # ACKed: a member
    ENDED = "ended"


def parse_offer(request):
    """The SDP offer in ``request``, None without a body; SDPError if bad."""
    if not request.body:
        return None
    if request.content_type not in (None, SDP):
        raise SDPError(f"SDP: cannot read {request.content_type}")
    return SessionDescription.parse(request.body)


@implementer(IDialogUsage)
class CallLeg:
    """One member's call with the focus (or, with ``peer``, a cascade leg
    to another focus: audio only, cascade.py)."""

    log = Logger()

    def __init__(self, ua, policy, room, rtp, transport="UDP", peer=None):
        self.ua = ua
        self.policy = policy
        self.room = room
        self.conference = room.conference
        self.rtp = rtp
        self.transport = transport
        self.peer = peer            # the focus id of a cascade leg, else None
        self.source = None          # where the member's requests in this call come from
        self.identity = None        # the user its digest proved (identity.py), if asked
        #: our offers and answers ([media] codecs, srtp: offers.py)
        self.media = CallMedia(room.services.node, room.media_address, rtp.port)
        self.dialog = None
        self.state = LegState.EARLY
        self.negotiated = None
        self.pending_offer = None   # our offer awaiting the answer in ACK
        self.joining_method = JoiningMethod.DIALED_IN
        self.referred_by = None
        self.user_entity = None
        self.endpoint_entity = None
        self.joined_at = None
        self._retransmitter = None
        self._invite_txn = None     # UAC: our INVITE's transaction
        self._ack = None            # UAC: the ACK, resent on 2xx retransmissions
        self.replaces = None        # the leg this one replaces (RFC 3891)
        self.provisional = False    # accepted beyond capacity: to be handed over
        self.handing_over = None    # the focus a handover of this leg is going to
        self.replacing_call_id = None   # the other focus's call this leg replaces
        self.handed_off = False     # another focus holds the member now
        self.epoch = 0              # ownership epoch of the member (replica.py)
        self.muted = False          # its voice is kept out of the mix (API, *6)
        self.in_lobby = False       # answered, asked for the PIN: not a member (pin.py)
        self.contact = None         # our Contact in this call (agent.py), else the focus's
        self.hold = None            # the caller's source budget for it (budget.Hold)
        self.refusal = None         # UAC: the final non-2xx response to our INVITE
        #: RFC 4028: refreshed by the phone (we watch) or by us (session_timer.py)
        self.timer = SessionTimer(ua.clock, self._send_refresh, lambda session: self._give_up(
            f"no session refresh within {session.interval} s"))
        #: [focus] qualify: OPTIONS in the call now and then (qualify.py); not to a focus
        self.qualifier = Qualifier(ua.clock, 0 if peer else room.services.node.config.qualify,
                                   self._qualify, self._give_up)
        self.allows_update = False  # the phone takes UPDATE (RFC 3311): our refreshes use it
        self._held = None           # the TCP/TLS connection we hold open for it (transport.hold)
        self.last_digit, self.last_digit_at = None, 0.0
        self.ended = defer.Deferred()

    def _set_state(self, state):
        if TRACE:
            self.log.debug("{leg}: {old} -> {new}", leg=self.call_id, old=self.state.value,
                           new=state.value)
        self.state = state

    @property
    def is_ours(self):
        """A member this focus holds: confirmed, past the lobby, not handed
        to another focus."""
        return self.state is LegState.CONFIRMED and not self.handed_off and not self.in_lobby

    @property
    def is_cascade(self):
        return self.peer is not None

    @property
    def between_foci(self):
        """A cascade leg's dialog is between foci: its requests carry our
        proof, and must carry theirs (trust.py)."""
        return self.peer is not None

    # -- dial-in (UAS) -----------------------------------------------------

    def accept(self, txn, request, source, offer_sdp, local_tag=None):
        """Answer a dial-in INVITE with 200 (§13.3.1.4); ``local_tag``: the
        To tag of the provisional responses already sent (agent.py)."""
        self.transport = source.transport
        self.source = source
        session = self._negotiate_timer(request)    # Refused: 422 before anything
        self.dialog = Dialog.from_uas(request, local_tag=local_tag)
        if self.ua.transport.hold(source):   # its TCP/TLS flow lives with the call
            self._held = source
        self.user_entity = aor(request.from_.uri)
        self.allows_update = allows(request, "UPDATE")
        body = self._answer_or_offer(offer_sdp)
        self.ua.add_dialog(self.dialog, self)
        self._send_2xx(txn, request, body, session)

    def _negotiate_timer(self, request):
        cfg = self.room.services.node.config
        return negotiate(request, cfg.min_se, cfg.session_expires)

    def _answer_or_offer(self, offer_sdp):
        if offer_sdp is None:                   # late offer: ours in the 200
            self.pending_offer = self.media.late_offer(self.transport)
            return self.pending_offer.to_bytes()
        sdp, self.negotiated = self.media.answer(offer_sdp, self.transport)
        return sdp.to_bytes()

    def _contact(self):
        return self.contact or self.room.contact(self.transport)

    def _flow(self):
        """Where our requests in the call go if not to its Contact (NAT: ua.flow)."""
        return self.ua.flow(self.dialog, self.source)

    def reachable_target(self):
        """The member as another focus must dial it (a handover, a takeover):
        its Contact, or behind a NAT that Contact at the address its
        requests come from (the rewrite Kamailio's fix_nated_contact makes)."""
        flow, target = self._flow(), self.dialog.remote_target
        if flow is None or flow.reliable:       # a connection is ours alone
            return target
        host = f"[{flow.host}]" if ":" in flow.host else flow.host
        return target.replace(host=host, port=flow.port)

    def _send_2xx(self, txn, request, body, session=None):
        """Our 2xx to an INVITE (or, not retransmitted, an UPDATE), which
        (re)starts the session timer (RFC 4028 §9)."""
        contact = self._contact()
        headers = uas_response_headers(request, self.dialog, contact)
        headers += response_headers(session)
        if body:
            headers.append(("Content-Type", SDP))
        response = self.policy.respond(request, 200, to_tag=self.dialog.local_tag,
                                       headers=headers, body=body)
        txn.respond(response)
        self.timer.start(session)
        if request.method != "INVITE":
            return
        if self._retransmitter is not None:
            self._retransmitter.stop()
        self._retransmitter = Retransmitter(self.ua, txn, response, self._no_ack)

    def ack_received(self, ack, source):
        if self._retransmitter is not None:
            self._retransmitter.stop()
            self._retransmitter = None
        if self.pending_offer is not None:
            try:
                if not ack.body:
                    raise SDPError("SDP: the ACK carries no answer to our offer")
                self.negotiated = accept_answer(self.pending_offer,
                                                SessionDescription.parse(ack.body))
            except SDPError as e:               # §13.2.1: end the call with BYE
                self.log.info("{call}: bad answer in ACK: {why}", call=self.dialog.call_id,
                              why=e.reason)
                self.pending_offer = None
                self.hangup()
                return
            self.pending_offer = None
        self._confirmed(source)

    def _no_ack(self):
        self._retransmitter = None
        self.log.info("{call}: no ACK for our 2xx: ending the call", call=self.dialog.call_id)
        self.hangup()

    def _confirmed(self, source=None):
        if self.state is not LegState.EARLY:
            self._media_changed()
            return
        self._set_state(LegState.CONFIRMED)
        self.qualifier.start()
        self.endpoint_entity = str(self.dialog.remote_target)
        self.room.leg_joined(self)
        if self.replaces is not None:          # RFC 3891 §3: end the old call
            self.replaces.hangup()
            self.replaces = None

    def _media_changed(self):
        if self.state is LegState.CONFIRMED:
            self.room.leg_changed(self)

    # -- dial-out (UAC) ----------------------------------------------------

    def dial(self, target, referred_by=None, on_progress=None, replaces=None, to=None,
             extra_headers=(), from_addr=None, srtp_profile=None):
        """INVITE ``target`` into the conference; ``on_progress(status,
        reason)`` hears every response (and 408/503 for failures).

        A focus that does not hold the conference URI appears to the member
        as that URI (From, Contact with ``isfocus``) and Record-Routes
        itself, so the member's requests in this dialog come here
        (docs/design.md, "Interception": ``lr`` and an explicit
        ``transport``).  ``replaces`` makes the INVITE replace the
        member's call with another focus (RFC 3891); ``to`` (the member's
        address, from a handover) is its To and the member's identity.
        ``from_addr`` (agent.py: the caller we connect) replaces the
        conference URI in From; then our Contact is ``self.contact``.
        ``srtp_profile``: the profile the member's call had when it was
        SRTP (a handover, a takeover), offered again where keys may travel
        (media/srtp.py ``Policy.offer_profile``); a focus with mandatory
        SRTP that cannot offer it reports 488 and sends nothing."""
        self.joining_method = JoiningMethod.DIALED_OUT
        self.referred_by = referred_by
        to_addr = NameAddr(target)
        if to:
            try:
                to_addr = NameAddr.parse(to, "To")
                to_addr.params.pop("tag", None)
            except SIPError:
                pass
        self.user_entity = aor(to_addr.uri)
        self.transport = (target.transport or "udp").upper()
        progress = on_progress or (lambda status, reason: None)
        try:
            self.pending_offer = self.media.offer(self.transport, srtp_profile)
        except NoSecureOffer as e:
            self.log.info("{conf}: not dialling {target}: {why}", conf=self.room.name,
                          target=str(target), why=str(e))
            self._failed(NOT_ACCEPTABLE_HERE, "SRTP Needs TLS", progress)
            return
        conference_uri = self.room.uri
        h = Headers()
        h.add("Max-Forwards", MAX_FORWARDS)
        caller = from_addr.uri if from_addr is not None else conference_uri
        display = from_addr.display if from_addr is not None else None
        h.add("From", str(NameAddr(caller, display=display, params={"tag": new_tag()})))
        h.add("To", str(to_addr))
        h.add("Call-ID", new_call_id())
        h.add("CSeq", "1 INVITE")
        if self.contact is not None:
            h.add("Contact", str(self.contact))
        elif self.ua.is_local(conference_uri):
            h.add("Contact", str(self.room.contact(self.transport)))
        else:
            own = self.ua.local_uri(None, self.transport)
            own = own.replace(params={"lr": None, "transport": self.transport.lower()})
            h.add("Record-Route", str(NameAddr(own)))
            h.add("Contact", str(NameAddr(conference_uri, params={"isfocus": None})))
        if replaces:
            h.add("Replaces", replaces)
            h.add("Require", "replaces")
        if referred_by:
            h.add("Referred-By", referred_by)
        for name, value in list(extra_headers) + list(self.policy.request_headers):
            h.add(name, value)
        h.add("Content-Type", SDP)
        invite = Request("INVITE", target.replace(params={
            k: v for k, v in target.params.items() if k not in ("method",)}, headers=[]),
            h, self.pending_offer.to_bytes())

        def on_response(response):
            if response.status < 200:
                progress(response.status, response.reason)
            elif response.status < 300:
                self._answered(invite, response, progress)
            else:
                self.refusal = response         # agent.py passes a redirect on
                self._failed(response.status, response.reason, progress)

        def on_error(reason):
            self._failed(408, "Request Timeout", progress)

        def started(txn):
            self._invite_txn = txn

        def not_sent(failure):
            self._failed(503, "Service Unavailable", progress)

        self.ua.send_request(invite, on_response, on_error,
                             to_focus=self.between_foci).addCallbacks(
            started, not_sent)

    def _answered(self, invite, response, progress):
        if self.dialog is not None:             # a 2xx retransmission: ACK again
            if self._ack is not None and response.to.tag == self.dialog.remote_tag:
                self.ua.send_ack(self._ack)
            return
        try:
            self.dialog = Dialog.from_uac(invite, response)
            self.negotiated = accept_answer(self.pending_offer,
                                            SessionDescription.parse(response.body))
        except (DialogError, SDPError) as e:
            self.log.info("{call}: unusable 2xx: {why}", call=invite.call_id, why=e.reason)
            if self.dialog is not None:         # §13.2.2.4: ACK, then BYE
                self._ack = self.dialog.create_ack(invite.cseq.seq)
                self.ua.add_dialog(self.dialog, self)
                self.ua.send_ack(self._ack)
                self.hangup()
            progress(488, "Not Acceptable Here")
            return
        self.pending_offer = None
        self.allows_update = allows(response, "UPDATE")
        self.timer.start(for_answer(response))
        # Our own Record-Route, echoed in the 2xx, is no hop toward the member.
        self.dialog.route_set = [r for r in self.dialog.route_set
                                 if not self.ua.is_local(r.uri)]
        self.ua.add_dialog(self.dialog, self)
        self._ack = self.dialog.create_ack(invite.cseq.seq)
        self.ua.send_ack(self._ack)
        progress(response.status, response.reason)
        self.room.add_candidate(self, response)
        self._confirmed()

    def retarget(self, contact):
        """A re-INVITE whose Contact is ``contact`` (a target refresh,
        §12.2.1.1, §14.1): the phone learns the call is a conference now
        (``isfocus``, RFC 4579 §4) and where to send its requests.  Tried
        again a second later while another offer is under way (§14.1)."""
        self.contact = contact
        self._reinvite_out([], lambda status, response: None,
                           lambda: self.retarget(contact))

    def _reinvite_out(self, headers, on_final, retry):
        """Send a re-INVITE with a new offer (and ``headers``); a second
        later (``retry``) while another offer is under way (§14.1).
        ``on_final(status, response)``: its final answer (None: failed)."""
        if self.state is not LegState.CONFIRMED:
            return
        if self.pending_offer is not None or self._retransmitter is not None:
            self.ua.clock.callLater(1.0, retry)
            return
        self.pending_offer = pending = self.media.offer(self.transport,
                                                        negotiated=self.negotiated)
        request = self.dialog.create_request(
            "INVITE", [("Contact", str(self._contact())), ("Content-Type", SDP)] + headers,
            pending.to_bytes())

        def on_response(response):
            if response.status < 200 or self.pending_offer is not pending:
                return
            self.pending_offer = None
            if response.status < 300:
                self.ua.send_ack(self.dialog.create_ack(request.cseq.seq), self._flow())
                try:
                    self.negotiated = accept_answer(pending,
                                                    SessionDescription.parse(response.body))
                    self._media_changed()
                except SDPError:
                    pass
            on_final(response.status, response)     # 491 and the like: the call goes on

        def on_error(reason):
            if self.pending_offer is pending:
                self.pending_offer = None
                on_final(None, None)
        self.ua.send_request(request, on_response, on_error, self._flow()).addErrback(
            lambda f: on_error(f.getErrorMessage()))

    # -- keeping the call honest (session_timer.py, qualify.py) ----------------

    def _send_refresh(self, headers, on_final):
        """A session refresh of ours (RFC 4028 §7.4): UPDATE if the phone
        takes it, else a re-INVITE."""
        if not self.allows_update:
            self._reinvite_out(headers, on_final, lambda: self._send_refresh(headers, on_final))
            return
        self._ask("UPDATE", [("Contact", str(self._contact()))] + headers, on_final)

    def _qualify(self, answered):
        self._ask("OPTIONS", [("Accept", SDP)] + list(self.policy.request_headers),
                  lambda status, response: answered(status))

    def _ask(self, method, headers, on_final):
        """A request in the call; ``on_final(status, response)``, (None,
        None) when no final response came."""
        self.ua.send_request(
            self.dialog.create_request(method, headers),
            lambda r: r.status >= 200 and on_final(r.status, r),
            lambda reason: on_final(None, None), self._flow()).addErrback(
                lambda f: on_final(None, None))

    def _give_up(self, why):
        self.log.info("{call}: {why}: ending the call", call=self.call_id, why=why)
        self.hangup()

    def _failed(self, status, reason, progress):
        progress(status, reason)
        self.end(f"dial-out failed: {status} {reason}")

    def cancel(self):
        """CANCEL a dial-out still ringing (§9.1)."""
        if self.dialog is None and self._invite_txn is not None:
            self._invite_txn.cancel()

    # -- inside the call ----------------------------------------------------

    def request_received(self, txn, request, source):
        policy = self.policy
        try:
            self.dialog.receive_request(request)
        except DialogError as e:
            txn.respond(policy.respond(request, e.status, e.reason))
            return
        self.source = source
        method = request.method
        if method == "BYE":
            txn.respond(policy.respond(request, 200))
            self.end("BYE from the member")
        elif method == "INVITE":
            self._reinvite(txn, request)
        elif method == "UPDATE":
            self._update(txn, request)
        elif method == "REFER" and self.in_lobby:
            txn.respond(policy.respond(request, 403, "Not A Member Yet"))
        elif method == "REFER":
            self.room.refer(txn, request, source, self)
        elif method in ("INFO", "OPTIONS"):
            headers = policy.capability_headers() if method == "OPTIONS" else []
            txn.respond(policy.respond(request, 200, headers=headers))
            digit = info_digit(request.content_type, request.body) \
                if method == "INFO" else None
            if digit is not None:               # a key pressed (PIN, *6)
                self.room.digit_received(self, digit)
        else:
            txn.respond(policy.respond(request, 481, "No Subscription In This Call"))

    def _reinvite(self, txn, request):
        """A target refresh, hold or resume (§14.2, RFC 3264 §8); a session
        refresh (RFC 4028 §9) too."""
        self._reoffered(txn, request, late_offer=True)

    def _update(self, txn, request):
        """UPDATE (RFC 3311 §5.2): a session refresh, with or without a new
        offer; no offer of ours is made in its answer."""
        self._reoffered(txn, request, late_offer=False)

    def _reoffered(self, txn, request, late_offer):
        if self._retransmitter is not None or self.pending_offer is not None:
            txn.respond(self.policy.respond(request, 491))   # §14.2, RFC 3311 §5.2
            return
        try:
            session = self._negotiate_timer(request)
            sdp = parse_offer(request)
            body = self._answer_or_offer(sdp) if sdp is not None or late_offer else b""
        except Refused as e:
            txn.respond(e.response(self.policy, request))
            return
        except SDPError as e:
            txn.respond(self.policy.respond(request, e.status, e.reason, headers=warning_headers(
                e, self.ua.local_hostport(self.transport))))
            return
        self._send_2xx(txn, request, body, session)
        if body and self.pending_offer is None:
            self._media_changed()

    def hangup(self):
        """End the call with BYE; Deferred firing once it is answered (or
        failed).  A dial-out still ringing is cancelled instead."""
        if self.state is LegState.ENDED:
            return defer.succeed(None)
        if self.dialog is None:
            self.cancel()
            return self.ended
        if self._retransmitter is not None:
            self._retransmitter.stop()
            self._retransmitter = None
        bye = self.dialog.create_request("BYE", list(self.policy.request_headers))
        done = defer.Deferred()

        def finished(*_):
            if not done.called:
                done.callback(None)
        self.ua.send_request(bye, finished, finished, self._flow(),
                             to_focus=self.between_foci).addErrback(finished)
        self.end("BYE from the focus")
        return done

    def end(self, why):
        """The call is over (no BYE of ours: see ``hangup``)."""
        if self.state is LegState.ENDED:
            return
        was = self.state
        self._set_state(LegState.ENDED)
        self.timer.close()
        self.qualifier.stop()
        if self._held is not None:
            self.ua.transport.release(self._held)
        if self._retransmitter is not None:
            self._retransmitter.stop()
            self._retransmitter = None
        if self.dialog is not None:
            self.ua.remove_dialog(self.dialog, self)
        self.room.leg_ended(self, why, was_member=was is LegState.CONFIRMED)
        self.ended.callback(None)

    # -- what the conference shows ------------------------------------------

    @property
    def media_status(self):
        """RFC 4575 §5.7.4 media status, from our side of the answer; a
        muted member's voice is not taken: we only send (sendonly)."""
        n = self.negotiated
        direction = n.direction if n is not None else "inactive"
        if self.muted:
            direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
        return direction

    @property
    def on_hold(self):
        return self.negotiated is not None and self.negotiated.on_hold

    @property
    def by_uri(self):
        """The URI of Referred-By (RFC 4575 joining-info/by), or None."""
        if not self.referred_by:
            return None
        try:
            return str(NameAddr.parse(self.referred_by).uri)
        except Exception:
            return None

    @property
    def call_id(self):
        return self.dialog.call_id if self.dialog else None

    def __repr__(self):
        return f"<CallLeg {self.state.value} {self.user_entity} {self.call_id}>"


def aor(uri):
    """A member's user entity: the URI without parameters (RFC 4575 §5.6)."""
    return str(uri.replace(params={}, headers=[]))
