"""The SIP transaction layer (RFC 3261 §17, RFC 6026), sans-IO.

Messages from the transport find their transaction here (§17.1.3 for
responses, §17.2.3 for requests with the RFC 2543 fallback, §9.2 for
CANCEL); the machines themselves are in ``transaction_state.py``.

Rules of this module:

- No I/O and no reactor: messages leave through ``send(message, peer)``,
  time comes from the injected ``clock`` (``IReactorTime``).  Every
  transaction timer waits in one heap here, with one clock call for the
  earliest: an entry is a small list, where a ``DelayedCall`` with its
  bound methods costs ~600 bytes, and a busy focus has ~10^5 timers.
- The layer matches, absorbs retransmissions and runs timers; it never
  decides what to answer.  What it produces itself: 100 Trying (§17.2.1),
  the ACK for a non-2xx (§17.1.1.3), a CANCEL on request (§9.1), 503 when
  the table is full, 500 when the TU raised.
- A terminated transaction leaves every table at once (§17.1.1.2: "MUST be
  destroyed immediately"); the number of live ones is bounded.
"""

import heapq
import itertools
import sys

from .ids import MAGIC_COOKIE, new_branch, new_tag
from .message import Request, Response, make_response
from .transaction_state import (  # noqa: F401  (re-exported: the public names)
    ACCEPTED, ACK, CALLING, COMPLETED, CONFIRMED, PROCEEDING, REQUEST, START,
    TERMINATED, TRANSPORT_ERROR, TRYING, WAITING, ClientTransaction, Event, Kind,
    ServerTransaction, State, Timer, TransactionLimit, TransactionStateError,
    TransactionTimeout, TransportError, _RETRANSMISSION)

__all__ = [
    "Timers", "TransactionLayer", "ClientTransaction", "ServerTransaction",
    "TransportError", "TransactionTimeout", "TransactionStateError",
    "TransactionLimit",
]


# -- timer values -------------------------------------------------------------------

_STRAY_WAIT = frozenset((Timer.D, Timer.I, Timer.J, Timer.K))  # absorb retransmissions
_T4_WAIT = frozenset((Timer.I, Timer.K))


class Timers:
    """T1, T2, T4 and the timers derived from them (RFC 3261 table 4,
    RFC 6026 §8.4/§8.7 for L and M).  Attributes give the values over an
    unreliable transport; ``value`` applies the reliable-transport rules."""

    __slots__ = ("T1", "T2", "T4", "D")

    def __init__(self, T1=0.5, T2=4.0, T4=5.0, D=32.0):
        self.T1, self.T2, self.T4, self.D = T1, T2, T4, D

    A = E = G = property(lambda self: self.T1)          # first retransmission
    B = F = H = J = L = M = property(lambda self: 64 * self.T1)
    I = K = property(lambda self: self.T4)

    def value(self, timer, reliable):
        """Seconds for ``timer`` (a ``Timer`` or its letter); None if it
        does not run at all.

        Over a reliable transport nothing is retransmitted (A, E, G are not
        started) and the timers that wait for stray retransmissions are
        zero (D, I, J, K): §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2."""
        if timer.__class__ is not Timer:
            timer = Timer(timer)
        if timer in _RETRANSMISSION:
            return None if reliable else self.T1
        if reliable and timer in _STRAY_WAIT:
            return 0
        if timer in _T4_WAIT:
            return self.T4
        if timer is Timer.D:
            return self.D
        return 64 * self.T1

    def __repr__(self):
        return f"Timers(T1={self.T1}, T2={self.T2}, T4={self.T4}, D={self.D})"


# -- matching keys ----------------------------------------------------------------

def _is_3261(branch):
    """RFC 3261 §17.2.3; a bare magic cookie is not a branch (RFC 4475 §3.2.1)."""
    return branch is not None and branch.startswith(MAGIC_COOKIE) and branch != MAGIC_COOKIE


#: sent-by -> the same tuple: the keys of one sender's transactions share one
#: host string and port (at 10^5 live keys, 86 bytes each).
_SENT_BY = {}


def _request_key(request, to_tag=None):
    """The key of ``request`` without its method (§17.2.3).

    RFC 3261: branch and sent-by.  RFC 2543 fallback: Request-URI, To tag,
    From tag, Call-ID, CSeq number and top Via (``to_tag`` overrides the To
    tag: an ACK carries the tag of the response it acknowledges)."""
    via = request.top_via
    if _is_3261(via.branch):
        host, port = via.sent_by
        sent_by = (host.lower(), port)
        if len(_SENT_BY) >= 4096:       # bounded: sent-by is the sender's to choose
            _SENT_BY.clear()
        return ("3261", via.branch) + _SENT_BY.setdefault(sent_by, sent_by)
    if to_tag is None:
        to_tag = request.to.tag
    return ("2543", request.uri_text, to_tag, request.from_.tag, request.call_id,
            request.cseq.seq, via.transport, via.host.lower(), via.port, via.branch)


class TransactionLayer:
    """Matches messages to transactions and runs them (RFC 3261 §17).

    ``send(message, peer)`` hands a message to the transport and may raise
    ``TransportError``; ``user`` is the TU, an ``ITransactionUser``
    (``interfaces.py``)."""

    def __init__(self, clock, send, user, timers=Timers(), max_transactions=100000):
        self.clock = clock
        self._send = send
        self.user = user
        self.timers = timers
        self.max_transactions = max_transactions
        self._clients = {}     # (branch, method) -> ClientTransaction   §17.1.3
        self._servers = {}     # request key + (method,) -> ServerTransaction
        self._targets = {}     # request key -> ServerTransaction a CANCEL may hit
        self._live = 0
        self._sources = {}     # Peer -> the same Peer: live transactions share one
        self._heap = []        # [due, seq, txn, timer]; txn is None once cancelled
        self._seq = itertools.count()
        self._pending = 0      # entries not cancelled
        self._wakeup = None    # the clock's call for the earliest entry
        self._firing = False

    @property
    def count(self):
        """Live transactions, client and server."""
        return self._live

    def __len__(self):
        return self._live

    # -- receiving ---------------------------------------------------------

    def receive(self, message, source):
        """A parsed and validated message from the transport."""
        if isinstance(message, Response):
            self._receive_response(message, source)
        else:
            self._receive_request(message, source)

    def _receive_response(self, response, source):
        # §17.1.3: top Via branch and CSeq method.
        txn = self._clients.get((response.top_via.branch, response.cseq.method))
        if txn is None:
            self.user.stray_response(response, source)
        else:
            txn._receive(response)

    def _receive_request(self, request, source):
        method = request.method
        key = _request_key(request)
        if method == "ACK":
            txn = self._servers.get(key + ("ACK" if key[0] == "2543" else "INVITE",))
            if txn is None:
                self.user.ack_received(request, source)    # §17.2.3: a 2xx ACK
            else:
                txn._ack_source = source
                txn._event(ACK, request)
            return
        txn = self._servers.get(key + (method,))
        if txn is not None:
            txn._event(REQUEST, request)                   # a retransmission
            return
        if self._live >= self.max_transactions:
            self._stateless(make_response(request, 503, to_tag=new_tag()), source)
            return
        method = sys.intern(method)          # the transaction's own method string
        keys = (self._servers, key + (method,))
        if method != "CANCEL":
            keys += (self._targets, key)
        sources = self._sources
        if len(sources) >= 4096:
            sources.clear()
        source = sources.setdefault(source, source)
        txn = ServerTransaction(self, request, source)
        self._add(txn, keys)
        try:
            if method == "CANCEL":
                # §9.2: the transaction the CANCEL is for is found by
                # assuming its method is anything but CANCEL or ACK.
                self.user.cancel_received(txn, request, source, self._targets.get(key))
            else:
                self.user.request_received(txn, request, source)
        except Exception:
            if txn.state in (TRYING, PROCEEDING):
                txn.respond(make_response(request, 500, to_tag=new_tag()))
            raise
        if method == "INVITE" and txn.state is PROCEEDING and txn.last_response is None:
            txn.respond(make_response(request, 100))        # §17.2.1

    def _stateless(self, response, peer):
        try:
            self._send(response, peer)
        except TransportError:
            pass

    def _expect_ack(self, txn, response):
        """RFC 2543 fallback: the ACK carries the To tag of our final
        response, so it is matched under that tag (§17.2.3)."""
        key = txn.keys[1]
        if key[0] != "2543":
            return
        to = response.to
        ack_key = _request_key(txn.request, to.tag if to is not None else None) + ("ACK",)
        if ack_key not in txn.keys[1::2]:
            self._servers[ack_key] = txn
            txn.keys += (self._servers, ack_key)

    # -- sending -----------------------------------------------------------

    def send_request(self, request, dest, on_response, on_error=None):
        """Start a client transaction for ``request`` to ``dest`` (§17.1).

        The top Via gets a fresh branch if it has none.  Raises
        ``TransactionLimit`` when ``max_transactions`` are live."""
        if request.method == "ACK":
            raise ValueError("an ACK is not sent in a transaction (§17.1.1.3)")
        txn = self._client(request, dest, on_response, on_error)
        self._start_client(txn)
        return txn

    def _client(self, request, dest, on_response, on_error, limit=True):
        if limit and self._live >= self.max_transactions:
            raise TransactionLimit(f"{self._live} transactions live")
        via = request.top_via
        if via is None:
            raise ValueError("a request needs a Via before it is sent (§8.1.1.7)")
        if via.branch is None:
            top = request.headers.pop_first_value("via")
            request.headers.add("Via", f"{top};branch={new_branch()}", first=True)
            via = request.top_via
        key = (via.branch, request.method)
        if key in self._clients:
            raise ValueError(f"branch {via.branch} already in use for {request.method}")
        return ClientTransaction(self, request, dest, key, on_response, on_error)

    def _start_client(self, txn):
        self._add(txn, (self._clients, txn.key))
        txn._event(START)

    def transport_error(self, message, peer, reason=None):
        """The transport failed to deliver ``message`` after ``send``
        returned (e.g. a connection that could not be opened): fail the
        transaction that sent it (§17.1.4, §17.2.4)."""
        error = reason if isinstance(reason, TransportError) else TransportError(reason or "transport error")
        txn = None
        if isinstance(message, Request):
            method = "INVITE" if message.method == "ACK" else message.method
            txn = self._clients.get((message.top_via.branch, method))
        else:
            via = message.top_via
            if _is_3261(via.branch):
                host, port = via.sent_by
                txn = self._servers.get(("3261", via.branch, host.lower(), port,
                                         message.cseq.method))
            else:       # RFC 2543 keys hold the Request-URI: match the rest
                cseq = message.cseq
                want = (message.from_.tag, message.call_id, cseq.seq, via.transport,
                        via.host.lower(), via.port, via.branch, cseq.method)
                txn = next((t for k, t in self._servers.items()
                            if k[0] == "2543" and k[3:] == want), None)
        if txn is not None:
            txn._event(TRANSPORT_ERROR, error)

    # -- the tables ----------------------------------------------------------

    def _add(self, txn, keys):
        self._live += 1
        txn.keys = keys           # (table, key, table, key...)
        for table, key in zip(keys[::2], keys[1::2]):
            table[key] = txn

    def _forget(self, txn):
        if not txn.keys:
            return              # a CANCEL dropped before it was ever sent
        keys = txn.keys
        for table, key in zip(keys[::2], keys[1::2]):
            if table.get(key) is txn:
                del table[key]
        txn.keys = ()
        self._live -= 1

    # -- timers: one heap, one clock call --------------------------------------

    def _schedule(self, seconds, txn, timer):
        """``timer`` of ``txn`` fires in ``seconds`` (``txn._fire(entry)``);
        returns the entry, for ``_cancel_timer``."""
        due = self.clock.seconds() + seconds
        entry = [due, next(self._seq), txn, timer]
        heapq.heappush(self._heap, entry)
        self._pending += 1
        if not self._firing:
            self._wake(due, seconds)
        return entry

    def _cancel_timer(self, entry):
        if entry[2] is None:
            return
        entry[2] = None             # the transaction is not held until ``due``
        self._pending -= 1
        heap = self._heap
        if not self._pending:
            heap.clear()
            if self._wakeup is not None:
                self._wakeup.cancel()
                self._wakeup = None
        elif len(heap) > 1024 and len(heap) > 2 * self._pending:
            heap[:] = [e for e in heap if e[2] is not None]
            heapq.heapify(heap)

    def _wake(self, due, seconds):
        call = self._wakeup
        if call is not None:
            if call.getTime() <= due:
                return
            call.cancel()
        self._wakeup = self.clock.callLater(max(0.0, seconds), self._run_timers)

    def _run_timers(self):
        """Fire every entry due, in order; a TU error still propagates to
        the clock, and the rest fire on the next call."""
        self._wakeup = None
        heap = self._heap
        now = self.clock.seconds()
        self._firing = True
        try:
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                txn = entry[2]
                if txn is not None:
                    entry[2] = None
                    self._pending -= 1
                    txn._fire(entry)
        finally:
            self._firing = False
            while heap and heap[0][2] is None:
                heapq.heappop(heap)
            if heap:
                self._wake(heap[0][0], heap[0][0] - now)
