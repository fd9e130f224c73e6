"""The UA core under the focus: dialogs, outgoing requests, 2xx handling.

pjsip's "UA layer": the transaction layer below knows nothing of dialogs;
the focus above knows nothing of Vias, next hops or 2xx retransmission.
This module is the middle (RFC 3261 §8.1, §12, §13.2.2.4, §13.3.1.4):

- ``dialogs`` maps a dialog id (Call-ID, local tag, remote tag) to the
  *usage* that owns it (a call leg, a subscription); an in-dialog request
  goes to ``usage.request_received(txn, request, source)``.
- ``send_request`` stamps our Via, finds the next hop (RFC 3263 through the
  transport) and starts a client transaction; ``send_ack`` sends the ACK
  for a 2xx, which is not a transaction (§13.2.2.4).
- ``Retransmitter`` repeats a UAS 2xx until its ACK comes (§13.3.1.4).

Twisted appears only as Deferreds from the transport's resolver; time is
the injected clock, so tests run it on ``task.Clock``.
"""

from twisted.internet import defer
from twisted.logger import Logger

from ..sip.address import Peer
from ..sip.ids import new_branch
from ..sip.message import Request
from ..sip.routing import MAX_UDP_REQUEST
from ..sip.transaction import TransactionLimit, TransportError
from ..sip.uri import URI

__all__ = ["UserAgent", "Retransmitter", "SendError"]


class SendError(Exception):
    """A request could not be sent at all (no route, no transaction room)."""


class UserAgent:
    """Shared services of every dialog usage of the focus."""

    log = Logger()

    def __init__(self, clock, transport, transactions, max_dialogs=100_000, signer=None,
                 flows="auto"):
        self.clock = clock
        self.flows = flows          # [nat] flows: auto, always or never (``flow``)
        self.transport = transport
        self.transactions = transactions
        #: signer(request, to_focus): the sip/proof.py Prover that signs
        #: ``request``, or None (trust.py ``FocusTrust.signer_for``)
        self.signer = signer or (lambda request, to_focus: None)
        self.max_dialogs = max_dialogs
        self.dialogs = {}           # (call_id, local_tag, remote_tag) -> usage
        self.expected = {}          # (call_id, local_tag) -> usage awaiting its dialog

    @property
    def timers(self):
        return self.transactions.timers

    # -- addresses ---------------------------------------------------------

    def local_hostport(self, transport="UDP", family=None):
        """(host, port) we are reachable at over ``transport``: its listener,
        else the first listener's host (an outbound stream still needs a
        sent-by)."""
        found = self.transport.local_address(transport, family)
        if found is None:
            first = self.transport.listening()[0]
            found = (first.host, first.port)
        return found

    def local_uri(self, user, transport="UDP", family=None):
        """A SIP URI of ours with ``user``, naming ``transport`` unless UDP
        (docs/design.md, "Interception": an explicit transport, so phones
        answer the right way)."""
        host, port = self.local_hostport(transport, family)
        params = {} if transport == "UDP" else {"transport": transport.lower()}
        return URI("sip", user=user, host=host, port=port, params=params)

    def is_local(self, uri):
        """Is ``uri`` one of our listeners (for Route popping, §16.4)?"""
        if not uri.is_sip:
            return False
        host = uri.host.strip("[]")
        for peer in self.transport.listening():
            port = uri.port or (5061 if peer.transport == "TLS" else 5060)
            if peer.host == host and peer.port == port:
                return True
        return False

    def is_local_host(self, host):
        """Is ``host`` the address of one of our listeners (any port)?"""
        host = host.strip("[]")
        return any(peer.host == host for peer in self.transport.listening())

    # -- dialogs -------------------------------------------------------------

    def add_dialog(self, dialog, usage):
        if len(self.dialogs) >= self.max_dialogs:
            raise SendError(f"{len(self.dialogs)} dialogs live")
        self.dialogs[dialog.id] = usage

    def remove_dialog(self, dialog, usage=None):
        if usage is None or self.dialogs.get(dialog.id) is usage:
            self.dialogs.pop(dialog.id, None)

    def find_dialog(self, request):
        """The usage of the dialog ``request`` belongs to, or None (§12.2.2).

        A NOTIFY may overtake the 2xx of its SUBSCRIBE or REFER (RFC 6665
        §4.1.2.4): a usage that ``expect``s a dialog gets it by Call-ID and
        our tag, and makes the dialog from the request itself."""
        usage = self.dialogs.get((request.call_id, request.to.tag, request.from_.tag))
        if usage is None and self.expected:
            usage = self.expected.get((request.call_id, request.to.tag))
        return usage

    def expect(self, call_id, local_tag, usage):
        """``usage`` sent a dialog-creating request (Call-ID, our tag):
        requests in the dialog-to-be reach it until ``unexpect``."""
        if len(self.expected) >= self.max_dialogs:
            raise SendError(f"{len(self.expected)} dialogs pending")
        self.expected[(call_id, local_tag)] = usage

    def unexpect(self, call_id, local_tag):
        self.expected.pop((call_id, local_tag), None)

    # -- sending -------------------------------------------------------------

    def _via(self, peer, branch=None):
        host, port = self.local_hostport(peer.transport, _family(peer.host))
        if ":" in host:
            host = f"[{host}]"
        via = f"SIP/2.0/{peer.transport} {host}:{port};rport"
        return f"{via};branch={branch}" if branch else via

    def flow(self, dialog, source):
        """Where our requests in ``dialog`` go instead of its next hop: the
        flow its peer's requests came from (``source``), or None.  A phone
        behind a NAT names a private address in its Contact, which nothing
        reaches; the address its requests come from does (RFC 3581's
        symmetry, RFC 5626's flow reuse; Asterisk's rewrite_contact).
        ``auto``: when no proxy is in the route set and the Contact's host
        is not the source's (over TCP/TLS, while that connection is open);
        ``always``: whenever known; ``never``: the Contact, as RFC 3261 says."""
        if source is None or dialog is None or self.flows == "never":
            return None
        if source.reliable and self.transport.connection(source) is None:
            return None
        if self.flows == "always":
            return source
        target = dialog.remote_target
        if dialog.route_set or target is None or target.host.strip("[]") == source.host:
            return None
        return source

    def locate(self, request):
        """Deferred ``Peer``: the first address of the next hop (RFC 3263)."""
        d = self.transport.locate(request)

        def first(peers):
            if not peers:
                raise SendError(f"no address for {request.uri_text}")
            return peers[0]
        return d.addCallback(first)

    def send_request(self, request, on_response, on_error=None, dest=None, to_focus=False):
        """Send ``request`` in a new client transaction; ``to_focus``: it
        goes to another focus, so it carries our proof (trust.py; so does
        every request naming a conference with a key of its own).

        Returns a Deferred firing with the ``ClientTransaction`` once it is
        started, or failing with ``SendError`` (nothing was sent; neither
        callback will be called)."""
        prover = self.signer(request, to_focus)
        if prover is not None:
            prover.sign(request)
        d = defer.succeed(dest) if dest is not None else self.locate(request)

        def start(peer):
            chosen = _congestion_controlled(request, peer)
            if chosen is peer:
                return self._start(request, peer, on_response, on_error)
            # §18.1.1: TCP only because of the size; if that attempt fails
            # before any answer (no TCP listener there), retry over UDP.
            answered = []

            def got(response):
                answered.append(True)
                on_response(response)

            def failed(reason):
                if answered:
                    if on_error is not None:
                        on_error(reason)
                    return
                # A copy: the transport may still report the failed TCP
                # attempt against the object it was given, and would find
                # the UDP transaction by its new Via if it were the same.
                retry = Request(request.method, request.uri, request.headers.copy(),
                                request.body)
                try:
                    self._start(retry, peer, on_response, on_error)
                except SendError as e:
                    if on_error is not None:
                        on_error(str(e))
            return self._start(request, chosen, got, failed)
        d.addCallback(start)
        d.addErrback(_as_send_error)
        return d

    def _start(self, request, peer, on_response, on_error):
        request.headers.remove("via")
        request.headers.add("Via", self._via(peer), first=True)
        try:
            return self.transactions.send_request(request, peer, on_response, on_error)
        except (TransactionLimit, TransportError, ValueError) as e:
            raise SendError(str(e)) from e

    def send_ack(self, ack, dest=None):
        """Send the ACK for a 2xx (§13.2.2.4): no transaction, a fresh
        branch; the caller keeps it to resend on 2xx retransmissions."""
        d = defer.succeed(dest) if dest is not None else self.locate(ack)

        def send(peer):
            if "via" not in ack.headers:
                ack.headers.add("Via", self._via(peer, new_branch()), first=True)
            self.transport.send(ack, peer)
            return peer
        d.addCallback(send)
        d.addErrback(lambda f: self.log.info("ACK for {call} not sent: {why}",
                                             call=ack.call_id, why=f.getErrorMessage()))
        return d


class Retransmitter:
    """Repeats a 2xx to an INVITE until the ACK arrives (RFC 3261 §13.3.1.4).

    T1, doubling up to T2; after 64*T1 without an ACK, ``on_timeout``
    (the UAS then ends the dialog with BYE).  Over a reliable transport
    only the give-up time counts.  One timer at a time, for whichever
    comes first: nearly every call is ACKed, so a second timer per call
    was only made to be cancelled."""

    def __init__(self, ua, txn, response, on_timeout):
        self.ua = ua
        self.txn = txn
        self.response = response
        self.on_timeout = on_timeout
        timers = ua.timers
        self._deadline = ua.clock.seconds() + 64 * timers.T1
        self._interval = timers.T1 if not txn.source.reliable else None
        self._call = None
        self._schedule()

    def _schedule(self):
        clock = self.ua.clock
        left = self._deadline - clock.seconds()
        if self._interval is not None and self._interval < left:
            self._call = clock.callLater(self._interval, self._resend)
        else:
            self._call = clock.callLater(max(left, 0.0), self._expired)

    def _resend(self):
        self._call = None
        try:
            self.txn.respond(self.response)
        except Exception:       # the transaction ended (Timer L): stop
            return
        self._interval = min(2 * self._interval, self.ua.timers.T2)
        self._schedule()

    def _expired(self):
        self._call = None
        self.on_timeout()

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None




def _congestion_controlled(request, peer):
    """The peer to use for ``request``: a UDP next hop becomes TCP at the
    same address when the request exceeds 1300 bytes and its URI does not
    ask for a transport (§18.1.1; RFC 3263 makes a SIP server listen on
    both).  Large NOTIFYs between foci (full multifocus state) need it."""
    body = len(request.body or b"")
    if peer.transport != "UDP" or body < MAX_UDP_REQUEST // 2 or \
            "transport" in request.uri.params:
        return peer
    # Serialize to measure only when the body alone does not decide it.
    if body <= MAX_UDP_REQUEST and len(request.to_bytes()) <= MAX_UDP_REQUEST:
        return peer
    return Peer("TCP", peer.host, peer.port)


def _family(host):
    return "IPv6" if ":" in host else "IPv4"


def _as_send_error(failure):
    if failure.check(SendError):
        return failure
    raise SendError(failure.getErrorMessage())

