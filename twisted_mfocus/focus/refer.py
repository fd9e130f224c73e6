"""REFER to the focus (RFC 3515, RFC 4579 §5.5, RFC 3892, RFC 4488).

``Refer-To: <sip:x>`` asks the focus to dial x into the conference;
``Refer-To: <sip:x;method=BYE>`` asks it to remove member x.  The focus
answers 202 and reports progress with ``message/sipfrag`` NOTIFYs of the
implicit ``refer`` subscription (RFC 3515 §2.4.4–§2.4.7): 100 Trying at
once, then each response of the dial-out, the final one terminating the
subscription.  ``Refer-Sub: false`` with ``norefersub`` (RFC 4488) skips
the subscription.

Rules of this module:

- The NOTIFYs go in the REFER's dialog: the member's call for an in-dialog
  REFER, a dialog the 202 creates for an out-of-dialog one.
- They are sent one at a time, each after the previous one is answered,
  so the referrer sees 100, 180, 200 in that order even over UDP.
- Who may REFER is policy (``refer_policy``): ``members`` (default) or
  ``anyone``.  A member is known by the call the REFER arrives in, or,
  outside any call, by its digest (401, identity.py): never by From.
  Whom a REFER may make us dial is ``refer_targets``: ``domain`` (default:
  SIP URIs of our own domain) or ``any``.  Only SIP URIs may be referred
  (403 otherwise).
- A full focus forwards an invitation to a focus with room
  (delegation.py, case 2).  A forwarded REFER (marker header) is taken
  only from a trusted focus (403 otherwise), skips the member policy (the
  forwarding focus applied it), and is refused with 482 once its hop
  count reaches ``max_hops`` and it would have to travel on.
- Headers in the Refer-To URI (RFC 3515 §2.1) other than Replaces are
  ignored; Replaces goes into the INVITE (a handover, RFC 3891).
"""

from twisted.logger import Logger
from zope.interface import implementer

from ..sip.dialog import Dialog, DialogError, uas_response_headers
from ..sip.errors import ParseError
from ..sip.ids import new_tag
from ..sip.values import NameAddr
from .delegation import MARKER, Forwarded, parse_marker
from .interfaces import IDialogUsage

__all__ = ["ReferSubscription", "Referrals"]

#: Who may REFER outside a call (``[focus] refer_policy``)
MEMBERS, ANYONE = "members", "anyone"
DOMAIN = "domain"       # [focus] refer_targets: only addresses of our domain

SIPFRAG = "message/sipfrag;version=2.0"


@implementer(IDialogUsage)
class ReferSubscription:
    """The implicit subscription a REFER creates (RFC 3515 §2.4.4)."""

    log = Logger()

    def __init__(self, ua, policy, dialog, event, owns_dialog, contact, between_foci=False):
        self.ua = ua
        #: our Contact: a NOTIFY that overtakes the 202 creates the
        #: referrer's dialog (RFC 6665 §4.1.2.4), and a request that can
        #: create one carries exactly one Contact (RFC 3261 §8.1.1.8)
        self.contact = str(contact)
        self.policy = policy
        #: the REFER came from a focus (forwarded, a handover): our NOTIFYs
        #: carry our proof, and its requests in the dialog must carry its own
        self.between_foci = between_foci
        self.dialog = dialog
        self.event = event
        self.owns_dialog = owns_dialog
        self._queue = []
        self._busy = False
        self.done = False

    def progress(self, status, reason):
        """Report one response of the referred request as a sipfrag."""
        if self.done:
            return
        final = status >= 200
        state = "terminated;reason=noresource" if final else "active;expires=60"
        self._queue.append((state, f"SIP/2.0 {status} {reason}\r\n".encode()))
        if final:
            self.done = True
        self._next()

    def _next(self):
        if self._busy or not self._queue:
            if not self._queue and self.done and not self._busy:
                self._finish()
            return
        state, body = self._queue.pop(0)
        headers = [("Event", self.event), ("Subscription-State", state),
                   ("Contact", self.contact), ("Content-Type", SIPFRAG)]
        notify = self.dialog.create_request("NOTIFY", headers, body)
        self._busy = True

        def answered(response):
            if response.status >= 200:
                self._sent()

        def failed(reason):
            self._queue.clear()
            self._sent()

        self.ua.send_request(notify, answered, failed,
                             to_focus=self.between_foci).addErrback(
            lambda f: failed(f.getErrorMessage()))

    def _sent(self):
        self._busy = False
        self._next()

    def _finish(self):
        if self.owns_dialog:
            self.ua.remove_dialog(self.dialog, self)

    def request_received(self, txn, request, source):
        """A request in the dialog an out-of-dialog REFER created: the
        subscription may be refreshed or ended, nothing else."""
        policy = self.policy
        try:
            self.dialog.receive_request(request)
        except DialogError as e:
            txn.respond(policy.respond(request, e.status, e.reason))
            return
        if request.method == "SUBSCRIBE":
            txn.respond(policy.respond(request, 200, headers=[("Expires", "60")]))
        else:
            txn.respond(policy.respond(request, 405, headers=[("Allow", "SUBSCRIBE")]))


def _refer_to(request):
    values = request.headers.get_all("refer-to")
    if len(values) != 1:            # RFC 3515 §2.4.1: exactly one
        raise ParseError("REFER needs exactly one Refer-To")
    return NameAddr.parse(values[0], "Refer-To")


class Referrals:
    """Accepts or refuses REFERs and acts on them, for every room."""

    def __init__(self, node, ua, policy, trust, auth):
        self.node = node
        self.config = node.config
        self.ua = ua
        self.policy = policy
        self.trust = trust
        self.auth = auth

    def _in_our_domain(self, uri):
        """Is ``uri`` an address of our own domain (``refer_targets``)?"""
        host = uri.host.strip("[]")
        return host == self.node.domain_host or self.ua.is_local_host(host)

    def refused_target(self, uri):
        """Why ``refer_targets`` forbids dialling ``uri`` (None: allowed): the
        one rule for a member's REFER and the operator's dial (moderation.py)."""
        if self.config.refer_targets == DOMAIN and not self._in_our_domain(uri):
            return "Refer Target Outside Our Domain"
        return None

    def _member_refers(self, txn, request, source, room, to_tag):
        """Is the sender of this out-of-dialog REFER a member of ``room`` (None:
        no such room), by its digest?  False after answering (a challenge, or
        403), the same whether or not the room exists: a stranger learns
        nothing of which rooms there are."""
        respond = self.policy.respond
        if not self.auth.available:
            txn.respond(respond(request, 403, "Only Members May Refer", to_tag=to_tag))
            return False
        user = self.auth.identify(txn, request, source)
        if user is None:
            return False
        if room is None or not room.is_member_user(user):
            txn.respond(respond(request, 403, "Only Members May Refer", to_tag=to_tag))
            return False
        return True

    def handle(self, txn, request, source, room, leg=None):
        """A REFER for ``room`` (None: the Request-URI names none we know),
        in ``leg``'s dialog or outside any."""
        respond = self.policy.respond
        to_tag = None if leg is not None else new_tag()
        forwarded = None
        marker = request.headers.get(MARKER)
        if marker is not None:      # untrusted nodes learn nothing, not even 404
            if not self.trust.trusts(request, source, room):
                txn.respond(respond(request, 403, "Forwarded REFER From Untrusted Node",
                                    to_tag=to_tag))
                return
            try:
                forwarded = parse_marker(marker)
            except (ValueError, ParseError) as e:
                txn.respond(respond(request, 400, f"Bad {MARKER}: {e}", to_tag=to_tag))
                return
        if forwarded is None and leg is None and self.config.refer_policy == MEMBERS and \
                not self._member_refers(txn, request, source, room, to_tag):
            return
        if room is None:
            txn.respond(respond(request, 404, "No Such Conference", to_tag=to_tag))
            return
        try:
            target = _refer_to(request).uri
        except ParseError as e:
            txn.respond(respond(request, 400, e.reason, to_tag=to_tag))
            return
        if not target.is_sip:
            txn.respond(respond(request, 403, "Only SIP URIs May Be Referred", to_tag=to_tag))
            return
        method = (target.params.get("method") or "INVITE").upper()
        if method not in ("INVITE", "BYE"):
            txn.respond(respond(request, 403, f"Cannot Refer {method}", to_tag=to_tag))
            return
        refused = self.refused_target(target) if method == "INVITE" and forwarded is None \
            else None
        if refused:
            txn.respond(respond(request, 403, refused, to_tag=to_tag))
            return
        victims = room.legs_of(target) if method == "BYE" else None
        if method == "BYE" and not victims:
            txn.respond(respond(request, 404, "Not A Member", to_tag=to_tag))
            return
        forward_to = None
        # A member moving between foci (Replaces: a focus leaving, a takeover
        # spreading out) is no newcomer: it is taken within the overflow margin
        # rather than lost, and spread again once a focus has room.
        moving = forwarded is not None and any(k.lower() == "replaces"
                                               for k, _ in target.headers)
        if method == "INVITE" and self.node.is_full() and not (
                moving and self.node.within_overflow()):
            forward_to = (forwarded or Forwarded(self.node.uri, 0)).next_hop()
            if forward_to.hops > self.config.max_hops:
                txn.respond(respond(request, 482, "Loop Detected: Too Many Forwarding Hops",
                                    to_tag=to_tag))
                return
            if not room.room_elsewhere():
                txn.respond(respond(request, 486, "Conference Focus Full", to_tag=to_tag))
                return

        # RFC 4488: honour Refer-Sub: false.
        no_sub = (request.headers.get("refer-sub") or "").strip().lower() == "false"
        headers = []
        sub = None
        if no_sub:
            headers.append(("Refer-Sub", "false"))
        if leg is not None:
            dialog = leg.dialog
        else:
            try:
                dialog = Dialog.from_uas(request, local_tag=to_tag)
            except DialogError as e:
                txn.respond(respond(request, e.status, e.reason, to_tag=to_tag))
                return
            headers = uas_response_headers(request, dialog,
                                           room.contact(source.transport)) + headers
        if not no_sub:
            # RFC 3515 §2.4.6: a second REFER in one dialog is told apart by id.
            event = f"refer;id={request.cseq.seq}" if leg is not None else "refer"
            sub = ReferSubscription(self.ua, self.policy, dialog, event,
                                    owns_dialog=leg is None,
                                    contact=room.contact(source.transport),
                                    between_foci=forwarded is not None)
            if leg is None:
                self.ua.add_dialog(dialog, sub)
        txn.respond(respond(request, 202, to_tag=dialog.local_tag, headers=headers))
        report = sub.progress if sub is not None else (lambda status, reason: None)
        report(100, "Trying")
        referred_by = request.headers.get("referred-by") or str(NameAddr(request.from_.uri))
        # Headers the referred INVITE is to carry (RFC 3515 §2.1, RFC 3261
        # §19.1.5): Replaces (a handover), To (the moving member's identity).
        carried = [(k, v) for k, v in target.headers if k.lower() in ("replaces", "to")]
        replaces = next((v for k, v in carried if k.lower() == "replaces"), None)
        to = next((v for k, v in carried if k.lower() == "to"), None)
        target = target.replace(headers=[])
        if method == "BYE":
            room.remove_legs(victims, report)
        elif forward_to is not None:
            target = target.replace(headers=carried)
            room.forward(target, referred_by, forward_to, report)
        else:
            room.dial_out(target, referred_by, report, replaces=replaces, to=to,
                          srtp_profile=forwarded.srtp if forwarded else None)
