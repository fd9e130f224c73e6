"""SIP dialogs (RFC 3261 §12), sans-IO.

Rules of this module:

- A ``Dialog`` is the state of §12.1: id (Call-ID, local tag, remote tag),
  local and remote URI, remote target, route set, local and remote CSeq.
  Everything that changes that state lives here.
- The route set is fixed when the dialog is created (§12.2: Record-Route
  in a later request or response does not change it).  This is why a focus
  that takes over a member sends a *new* INVITE with its own Record-Route
  (docs/design.md, "Interception").
- Requests built here carry no Via: the element that sends them adds its
  own (transaction layer / transport know the local address).
- ``strict_route_fixup`` and ``pop_own_route`` are the receiving element's
  side of routing (§16.4), as pure functions over a request.
"""

import enum

from .errors import SIPError
from .headers import Headers
from .values import NameAddr
from .ids import MAGIC_COOKIE, new_tag
from .message import MAX_FORWARDS, Request

__all__ = ["Dialog", "DialogError", "DialogState", "dialog_id_of", "uas_response_headers",
           "strict_route_fixup", "pop_own_route", "TARGET_REFRESH", "target_dialog",
           "parse_target_dialog"]

#: Methods whose 2xx (or request) refreshes the remote target (§12.2, RFC 3311).
TARGET_REFRESH = frozenset(("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"))

#: URI parameters that may not appear in a Request-URI (§19.1.1 table).
_NOT_IN_RURI = ("method", "ttl")


class DialogError(SIPError):
    """A request that does not fit the dialog (status says how to answer)."""

    status = 481
    default_reason = "Call/Transaction Does Not Exist"


def dialog_id_of(message, local_is_uas):
    """The dialog id a received message belongs to (§12).

    For a request we received, our tag is its To tag; for a response to our
    request, our tag is its From tag.
    """
    call_id = message.call_id
    if local_is_uas:
        return (call_id, message.to.tag, message.from_.tag)
    return (call_id, message.from_.tag, message.to.tag)


def _remote_target(message, from_2543=False):
    """The Contact's URI.  With ``from_2543``, a request from an RFC 2543
    client (no magic cookie in its branch), which needed no Contact, has
    its From as the target instead (RFC 4475 §3.4.1: accepted, for
    backward compatibility)."""
    contacts = message.contacts
    if not contacts and from_2543 and not (message.top_via.branch or "").startswith(
            MAGIC_COOKIE):
        return message.from_.uri
    if len(contacts) != 1 or contacts[0].wildcard:
        raise DialogError("Dialog needs exactly one Contact", status=400)
    return contacts[0].uri


class DialogState(enum.StrEnum):
    """§12.1: a dialog is early (made by a provisional response) or
    confirmed (by a 2xx)."""

    EARLY = "early"
    CONFIRMED = "confirmed"


class Dialog:
    """One dialog, seen from our side."""

    def __init__(self, call_id, local_tag, remote_tag, local_uri, remote_uri,
                 remote_target, route_set, local_seq, remote_seq, secure=False,
                 state=DialogState.CONFIRMED, local_display=None):
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri          # NameAddr without tag
        self.remote_uri = remote_uri        # NameAddr without tag
        self.remote_target = remote_target  # URI
        self.route_set = list(route_set)    # [NameAddr], in sending order
        self.local_seq = local_seq          # last CSeq we sent (None: none yet)
        self.remote_seq = remote_seq        # last CSeq received (None: none yet)
        self.secure = secure
        self.state = state

    @property
    def id(self):
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation (§12.1) --------------------------------------------------

    @classmethod
    def from_uac(cls, request, response):
        """The dialog a response with a To tag creates at the UAC (§12.1.2).

        1xx → early, 2xx → confirmed.  The route set is the response's
        Record-Route in reverse order.
        """
        tag = response.to.tag
        if not tag:
            raise DialogError("Response without To tag creates no dialog", status=400)
        routes = list(reversed(response.record_routes))
        return cls(request.call_id, request.from_.tag, tag,
                   _untagged(request.from_), _untagged(request.to),
                   _remote_target(response), routes, request.cseq.seq, None,
                   secure=request.uri.scheme == "sips",
                   state=DialogState.EARLY if response.status < 200 else
                   DialogState.CONFIRMED)

    @classmethod
    def from_uas(cls, request, local_tag=None, state=DialogState.CONFIRMED):
        """The dialog we create by answering ``request`` (§12.1.1).

        The route set is the request's Record-Route in order; the remote
        CSeq is the request's.
        """
        return cls(request.call_id, local_tag or new_tag(), request.from_.tag,
                   _untagged(request.to), _untagged(request.from_),
                   _remote_target(request, from_2543=True), list(request.record_routes), None,
                   request.cseq.seq, secure=request.uri.scheme == "sips", state=state)

    def confirm(self, response=None):
        """early → confirmed on a 2xx; a 2xx also refreshes the target."""
        self.state = DialogState.CONFIRMED
        if response is not None and response.contacts:
            self.remote_target = _remote_target(response)

    # -- requests we send (§12.2.1.1) --------------------------------------

    def create_request(self, method, headers=(), body=b"", cseq=None):
        """An in-dialog request: tags, Call-ID, next CSeq, Route/R-URI.

        Loose routing (first route has ``lr``): R-URI = remote target,
        Route = route set.  Strict routing: R-URI = first route's URI
        without the parameters a Request-URI may not carry, Route = the
        other routes then the remote target (§12.2.1.1).
        """
        if cseq is None:
            # §8.1.1.5: any start below 2**31; start low, leave room to grow.
            self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
            cseq = self.local_seq
        h = Headers()
        ruri, routes = self._request_target()
        for route in routes:
            h.add("Route", str(route))
        h.add("Max-Forwards", MAX_FORWARDS)
        h.add("From", str(_tagged(self.local_uri, self.local_tag)))
        h.add("To", str(_tagged(self.remote_uri, self.remote_tag)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for name, value in headers:
            h.add(name, value)
        return Request(method, ruri, h, body)

    def create_ack(self, invite_cseq, headers=(), body=b""):
        """The ACK for a 2xx: same CSeq number as the INVITE (§13.2.2.4)."""
        return self.create_request("ACK", headers, body, cseq=invite_cseq)

    def _request_target(self):
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if "lr" in first.uri.params:
            return self.remote_target, list(self.route_set)
        params = {k: v for k, v in first.uri.params.items() if k not in _NOT_IN_RURI}
        ruri = first.uri.replace(params=params, headers=[])
        return ruri, list(self.route_set[1:]) + [NameAddr(self.remote_target)]

    # -- requests we receive (§12.2.2) -------------------------------------

    def receive_request(self, request):
        """Check and apply an in-dialog request; raise DialogError if bad.

        A lower CSeq than the last one is a 500 (§12.2.2); ACK and CANCEL
        carry the INVITE's number and are exempt.  Target-refresh requests
        update the remote target.
        """
        if request.method not in ("ACK", "CANCEL"):
            seq = request.cseq.seq
            if self.remote_seq is not None and seq <= self.remote_seq:
                raise DialogError("CSeq lower than the dialog's", status=500)
            self.remote_seq = seq
        if request.method in TARGET_REFRESH and request.contacts:
            self.remote_target = _remote_target(request)

    def receive_response(self, request, response):
        """Apply a response to our in-dialog request (§12.2.1.2): a 2xx to a
        target-refresh request updates the remote target."""
        if 200 <= response.status < 300 and request.method in TARGET_REFRESH \
                and response.contacts:
            self.remote_target = _remote_target(response)

    def __repr__(self):
        return f"<Dialog {self.state.value} {self.id}>"


def target_dialog(dialog):
    """The ``Target-Dialog`` value naming ``dialog`` to its other party
    (RFC 4538 §7: the tags as the recipient sees them, so its local tag is
    our remote one)."""
    return f"{dialog.call_id};local-tag={dialog.remote_tag};remote-tag={dialog.local_tag}"


def parse_target_dialog(value):
    """(Call-ID, local tag, remote tag) of a ``Target-Dialog`` value, as
    the recipient keys its dialogs; ``SIPError`` (400) if either tag is
    missing or the value is not one dialog (RFC 4538 §7)."""
    call_id, *params = [p.strip() for p in (value or "").split(";")]
    tags = {}
    for param in params:
        name, eq, tag = param.partition("=")
        name = name.strip().lower()
        if name in ("local-tag", "remote-tag"):
            if not eq or not tag.strip() or name in tags:
                raise SIPError(f"Bad Target-Dialog {name}", status=400)
            tags[name] = tag.strip()
    if not call_id or " " in call_id or len(tags) != 2:
        raise SIPError("Bad Target-Dialog: want Call-ID;local-tag=..;remote-tag=..",
                       status=400)
    return call_id, tags["local-tag"], tags["remote-tag"]


def uas_response_headers(request, dialog, contact):
    """Headers a dialog-creating response carries (§12.1.1): the request's
    Record-Route copied as is, and our Contact.  The To tag is added by
    ``make_response(..., to_tag=dialog.local_tag)``."""
    out = [("Record-Route", value) for value in request.headers.lines("record-route")]
    out.append(("Contact", str(contact)))
    return out


def pop_own_route(request, is_local):
    """Loose routing at a receiving element (§16.4): remove the top Route
    if it names us.  Returns True if one was removed."""
    routes = request.routes
    if routes and is_local(routes[0].uri):
        request.headers.pop_first_value("route")
        return True
    return False


def strict_route_fixup(request, is_local):
    """Undo a strict router's rewrite (§16.4, §16.12.1.2).

    If the Request-URI is a URI we put in a Record-Route, the previous hop
    was a strict router: the real Request-URI is the last Route value, which
    is removed.  Our Record-Route values name no user, so a Request-URI with
    one (``sip:room@focus`` with a pre-loaded ``Route: <sip:focus;lr>`` from
    a phone whose outbound proxy is the focus) is a loose-routed request to
    us, left as it is.  Returns True if the request was changed.
    """
    if request.uri.user or not is_local(request.uri):
        return False
    routes = request.routes
    if not routes:
        return False
    last = routes[-1]
    values = request.headers.get_all("route")
    request.headers.remove("route")
    for value in values[:-1]:
        request.headers.add("Route", value)
    request.uri = last.uri
    return True


def _untagged(name_addr):
    params = {k: v for k, v in name_addr.params.items() if k != "tag"}
    return NameAddr(name_addr.uri, name_addr.display, params)


def _tagged(name_addr, tag):
    params = dict(name_addr.params)
    if tag:
        params["tag"] = tag
    return NameAddr(name_addr.uri, name_addr.display, params)

