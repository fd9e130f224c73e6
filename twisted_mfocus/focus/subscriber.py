"""The subscriber side of SIP events (RFC 6665 §4.1), for SUBSCRIBE and REFER.

A focus subscribes to other foci (``inet-ci-multifocus-ext``) and, when it
forwards a REFER, to the implicit ``refer`` subscription of the focus it
forwarded to (RFC 3515 §2.4.4).  Both are the same machine: send a
dialog-creating request, take the dialog from its 2xx *or* from a NOTIFY
that overtook it (RFC 6665 §4.1.2.4), answer every NOTIFY, hear the
subscription end.  ``Subscriber`` is that machine; what the NOTIFYs mean is
the owner's business (``on_notify``).

Rules of this module:

- Every NOTIFY in the dialog gets 200 unless it is out of order (the
  dialog's CSeq check), then it reaches ``on_notify(request)``.
- ``on_result(status)`` is called once: the final response of the initial
  request (408 for a timeout, 503 when it could not be sent).
- ``on_end(reason)`` is called once when the subscription ends for any
  reason after it began: a terminated NOTIFY, a failed refresh, ``close``.
"""

import enum

from twisted.logger import Logger
from zope.interface import implementer

from ..sip.dialog import Dialog, DialogError
from ..sip.headers import Headers
from ..sip.ids import new_call_id, new_tag
from ..sip.message import MAX_FORWARDS, Request
from ..sip.values import NameAddr
from ..tracing import TRACE
from .interfaces import IDialogUsage

__all__ = ["Subscriber", "SubscriberState", "out_of_dialog_request"]


class SubscriberState(enum.Enum):
    NEW = "new"
    PENDING = "pending"         # request sent, no dialog yet
    ACTIVE = "active"
    ENDED = "ended"


def out_of_dialog_request(method, ruri, from_uri, to_uri, contact, headers=()):
    """A new dialog-creating request (§8.1.1) from ``from_uri`` (ours)."""
    h = Headers()
    h.add("Max-Forwards", MAX_FORWARDS)
    h.add("From", str(NameAddr(from_uri, params={"tag": new_tag()})))
    h.add("To", str(NameAddr(to_uri)))
    h.add("Call-ID", new_call_id())
    h.add("CSeq", f"1 {method}")
    h.add("Contact", str(contact))
    for name, value in headers:
        h.add(name, value)
    return Request(method, ruri, h)


@implementer(IDialogUsage)
class Subscriber:
    """One subscription we hold (or the implicit one of a REFER we sent)."""

    log = Logger()

    def __init__(self, ua, policy, request, on_notify, on_result=None, on_end=None,
                 dest=None, between_foci=False):
        self.ua = ua
        self.policy = policy
        self.request = request
        self.on_notify = on_notify
        self.on_result = on_result or (lambda status: None)
        self.on_end = on_end or (lambda reason: None)
        self.dest = dest
        #: subscribed to another focus: our requests carry our proof, and its
        #: NOTIFYs must carry its own (trust.py)
        self.between_foci = between_foci
        self.dialog = None
        self.state = SubscriberState.NEW
        self._result_sent = False

    def _set_state(self, state):
        if TRACE:
            self.log.debug("{request} {uri}: {old} -> {new}", request=self.request.method,
                           uri=self.request.uri, old=self.state.value, new=state.value)
        self.state = state

    @property
    def event(self):
        return self.request.headers.get("event") or "refer"

    def start(self):
        request = self.request
        self._set_state(SubscriberState.PENDING)
        self.ua.expect(request.call_id, request.from_.tag, self)
        self.ua.send_request(request, self._response, self._error, self.dest,
                             to_focus=self.between_foci).addErrback(
            lambda f: self._error(f.getErrorMessage(), status=503))

    def _response(self, response):
        if response.status < 200:
            return
        self.ua.unexpect(self.request.call_id, self.request.from_.tag)
        if response.status < 300:
            if self.dialog is None:
                try:
                    self._adopt(Dialog.from_uac(self.request, response))
                except DialogError as e:
                    self.log.info("{event} to {uri}: unusable 2xx: {why}",
                                  event=self.event, uri=str(self.request.uri), why=e.reason)
                    self._result(500)
                    return
            self._result(response.status)
        else:
            self._result(response.status)
            self._ended(f"{response.status} {response.reason}")

    def _error(self, reason, status=408):
        self.ua.unexpect(self.request.call_id, self.request.from_.tag)
        self._result(status)
        self._ended(reason)

    def _result(self, status):
        if not self._result_sent:
            self._result_sent = True
            self.on_result(status)

    def _adopt(self, dialog):
        # Our own Record-Route entries are not hops toward the peer.
        dialog.route_set = [r for r in dialog.route_set if not self.ua.is_local(r.uri)]
        self.dialog = dialog
        if self.state is SubscriberState.PENDING:
            self._set_state(SubscriberState.ACTIVE)
        self.ua.add_dialog(dialog, self)

    def _adopt_from(self, notify):
        """The dialog a NOTIFY makes (RFC 6665 §4.1.2.4); its remote CSeq is
        that NOTIFY's.  ``DialogError`` before anything changed."""
        dialog = Dialog.from_uas(notify, local_tag=notify.to.tag)
        self.ua.unexpect(self.request.call_id, self.request.from_.tag)
        dialog.local_seq = self.request.cseq.seq
        self._adopt(dialog)

    # -- the dialog usage ----------------------------------------------------

    def request_received(self, txn, request, source):
        if request.method != "NOTIFY":
            txn.respond(self.policy.respond(request, 405, headers=[("Allow", "NOTIFY")]))
            return
        if self.state is SubscriberState.ENDED:
            txn.respond(self.policy.respond(request, 481, "Subscription Ended"))
            return
        try:
            if self.dialog is None:     # the NOTIFY overtook our request's 2xx
                self._adopt_from(request)
            else:
                self.dialog.receive_request(request)
        except DialogError as e:        # e.g. no Contact: no dialog to make
            txn.respond(self.policy.respond(request, e.status, e.reason))
            return
        txn.respond(self.policy.respond(request, 200))
        state = (request.headers.get("subscription-state") or "").strip()
        self.on_notify(request)
        if state.lower().startswith("terminated"):
            reason = state.partition("reason=")[2].split(";")[0].strip() or "terminated"
            self._ended(reason)

    # -- refresh and end -------------------------------------------------------

    def refresh(self, expires, on_done=None):
        """Re-SUBSCRIBE in the dialog (RFC 6665 §4.1.2.2): the notifier
        answers with a NOTIFY of full state.  A failure ends us."""
        if self.dialog is None or self.state is not SubscriberState.ACTIVE:
            return
        headers = [("Event", self.event), ("Expires", str(expires)),
                   ("Contact", self.request.headers.get("contact"))]
        accept = self.request.headers.get("accept")
        if accept:
            headers.append(("Accept", accept))
        request = self.dialog.create_request("SUBSCRIBE", headers)

        def answered(response):
            if response.status < 200:
                return
            if response.status >= 300:
                self._ended(f"refresh got {response.status}")
            if on_done is not None:
                on_done(response.status)

        def failed(reason):
            self._ended(f"refresh failed: {reason}")
            if on_done is not None:
                on_done(408)
        self.ua.send_request(request, answered, failed,
                             to_focus=self.between_foci).addErrback(
            lambda f: failed(f.getErrorMessage()))

    def ping(self, on_answer):
        """OPTIONS in the dialog (RFC 3261 §11, §12.2.1.1): a keep-alive that
        also proves the notifier still has the subscription (481 if not).
        ``on_answer(status)``: the final status, or None when no answer came
        (timeout, transport error).  False if there is no dialog to ping."""
        if self.dialog is None or self.state is not SubscriberState.ACTIVE:
            return False
        request = self.dialog.create_request("OPTIONS", [("Accept", "application/sdp")])

        def answered(response):
            if response.status >= 200:
                on_answer(response.status)
        self.ua.send_request(request, answered, lambda reason: on_answer(None),
                             to_focus=self.between_foci).addErrback(
            lambda f: on_answer(None))
        return True

    def close(self):
        """Unsubscribe (Expires: 0) if active; ends us either way."""
        if self.state is SubscriberState.ACTIVE and self.request.method == "SUBSCRIBE":
            self.refresh(0)
        self._ended("closed")

    def _ended(self, reason):
        if self.state is SubscriberState.ENDED:
            return
        self._set_state(SubscriberState.ENDED)
        if self.dialog is not None:
            self.ua.remove_dialog(self.dialog, self)
        self.on_end(reason)

    def __repr__(self):
        return f"<Subscriber {self.event} {self.request.uri} {self.state.value}>"
