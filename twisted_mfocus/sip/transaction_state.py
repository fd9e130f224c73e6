"""The transaction state machines (RFC 3261 §17, amended by RFC 6026).

The four machines are RFC 3261 figures 5 (INVITE client), 6 (non-INVITE
client), 7 (INVITE server) and 8 (non-INVITE server), with RFC 6026's
"Accepted" state and Timers L and M replacing the INVITE figures (RFC 6026
§8.4 and §8.7): a 2xx no longer ends an INVITE transaction at once, so 2xx
retransmissions reach the UAC's TU and INVITE retransmissions are absorbed
at the UAS.

Rules of this module:

- Everything that changes a transaction's state lives in this file, in
  two tables: ``TRANSITIONS[kind][state][event] -> (next state, actions)``
  and ``TIMERS[kind][state] -> (timers started on entry, timers kept
  running)``.  Kinds, states, events and timers are enum members (a timer
  is an event too); an action is the transaction's own method, stored as
  a function and called as ``action(txn, arg)``.  The code that walks the
  tables is a few lines, and a state changes in one place
  (``_Transaction._set_state``); an event with no entry is ignored when it
  comes from the network or a timer, and is a ``TransactionStateError``
  when it comes from the TU.
- This file does not know how messages find their transaction (that is
  ``transaction.py``); a transaction reaches the outside only through its
  layer: ``send``, ``timers``, ``user`` (an ``ITransactionUser``), the
  table hooks and the timer heap (``_schedule``, ``_cancel_timer``).
- No I/O and no reactor: time is the layer's injected ``IReactorTime``.
"""

import enum
import sys

from twisted.logger import Logger

from ..tracing import TRACE
from .headers import Headers, canonical_name
from .message import Request, SentResponse, make_response, parse_datagram

__all__ = [
    "Timer", "Kind", "State", "Event", "ClientTransaction",
    "ServerTransaction", "TransportError", "TransactionTimeout",
    "TransactionStateError", "TransactionLimit",
]

_log = Logger()


class TransportError(Exception):
    """The transport could not send (raised by ``send``, or reported later
    through ``TransactionLayer.transport_error``)."""


class TransactionTimeout(Exception):
    """Timer B, F or H fired: the peer never completed the transaction."""


class TransactionStateError(Exception):
    """The TU asked for something the transaction's state forbids."""


class TransactionLimit(Exception):
    """No room for another transaction (``max_transactions``)."""


class _Symbol(enum.Enum):
    """A name in the tables, printed as its value ("Completed").

    Members are compared by identity; they also hash by identity, because
    they key every table lookup on the hot path and ``Enum.__hash__``
    hashes the member's name in Python."""

    __hash__ = object.__hash__

    def __str__(self):
        return self.value


class Timer(_Symbol):
    """The transaction timers, by their letter (RFC 3261 table 4, RFC 6026
    §8.4/§8.7 for L and M).  A timer firing is an event of the tables."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"
    J = "J"
    K = "K"
    L = "L"
    M = "M"

    def __str__(self):
        return f"Timer {self.value}"


_RETRANSMISSION = frozenset((Timer.A, Timer.E, Timer.G))       # T1, then doubling


# -- the names in the tables --------------------------------------------------------

class Kind(_Symbol):
    """Which of the four machines a transaction runs."""

    INVITE_CLIENT = "INVITE client"            # figure 5
    NON_INVITE_CLIENT = "non-INVITE client"    # figure 6
    INVITE_SERVER = "INVITE server"            # figure 7
    NON_INVITE_SERVER = "non-INVITE server"    # figure 8


class State(_Symbol):
    """The states of the figures, and RFC 6026's Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"
    #: Not an RFC state: a client transaction not started yet, e.g. a CANCEL
    #: built before any provisional response arrived, held back until one
    #: does (§9.1).
    WAITING = "Waiting"


class Event(_Symbol):
    """What happens to a transaction, besides a ``Timer`` firing."""

    START = "request from TU"    # a client transaction sends its request
    DROP = "drop"                # a held-back CANCEL that must never be sent
    PROVISIONAL = "1xx"          # response received by a client transaction
    SUCCESS = "2xx"              # 2xx to an INVITE (for non-INVITE a 2xx is FINAL)
    FINAL = "final"              # 300-699 to INVITE, 200-699 to non-INVITE
    REQUEST = "request"          # a retransmission of the server's request
    ACK = "ACK"                  # an ACK matching an INVITE server transaction
    TU_PROVISIONAL = "1xx from TU"
    TU_SUCCESS = "2xx from TU"   # INVITE only
    TU_FINAL = "final from TU"   # 300-699 for INVITE, 200-699 for non-INVITE
    TRANSPORT_ERROR = "transport error"


# Short names, for the tables and for importers (``transaction.py``, tests).
INVITE_CLIENT, NON_INVITE_CLIENT = Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT
INVITE_SERVER, NON_INVITE_SERVER = Kind.INVITE_SERVER, Kind.NON_INVITE_SERVER

CALLING, TRYING, PROCEEDING = State.CALLING, State.TRYING, State.PROCEEDING
COMPLETED, CONFIRMED, ACCEPTED = State.COMPLETED, State.CONFIRMED, State.ACCEPTED
TERMINATED, WAITING = State.TERMINATED, State.WAITING

START, DROP = Event.START, Event.DROP
PROVISIONAL, SUCCESS, FINAL = Event.PROVISIONAL, Event.SUCCESS, Event.FINAL
REQUEST, ACK = Event.REQUEST, Event.ACK
TU_PROVISIONAL, TU_SUCCESS, TU_FINAL = Event.TU_PROVISIONAL, Event.TU_SUCCESS, Event.TU_FINAL
TRANSPORT_ERROR = Event.TRANSPORT_ERROR


# -- the transactions -----------------------------------------------------------------

class _Transaction:
    """What both sides share: walking the tables and running timers."""

    __slots__ = ("_layer", "kind", "_request", "method", "peer", "reliable", "state",
                 "_calls", "_interval", "keys")

    def __init__(self, layer, kind, request, peer, state):
        self._layer = layer
        self.kind = kind
        self._request = request
        self.method = sys.intern(request.method)      # one string for them all
        self.peer = peer
        self.reliable = peer.reliable
        self.state = state
        self._calls = ()          # its entries in the layer's timer heap
        self._interval = None     # the retransmission timer's (A, E, G) current value
        self.keys = ()            # (table, key, table, key...): where it is filed

    @property
    def request(self):
        return self._request

    def _event(self, event, arg=None):
        """Apply ``event``; False if the table has no entry for it here."""
        try:
            new, actions = TRANSITIONS[self.kind][self.state][event]
        except KeyError:
            return False
        old = self.state
        if new is not old:
            self._set_state(new, event)
        for action in actions:
            action(self, arg)
            if self.state is not new:   # an action moved us on (send failed)
                return True
        if new is not old and new is not TERMINATED:
            for timer in TIMERS[self.kind][new][0]:
                self._start_timer(timer)
                if self.state is not new:   # a zero timer fired
                    break
        return True

    def _set_state(self, new, event):
        """The one place a transaction changes state.  Entering Terminated
        leaves the layer; entering any other state cancels the timers it
        does not keep running (the walk of ``_event`` starts the new ones)."""
        if TRACE:           # tracing.py: off, a state change costs one test
            _log.debug("{txn!r} -> {state} on {event}", txn=self, state=new, event=event)
        self.state = new
        if new is TERMINATED:
            self._cleanup()
        else:
            keep = TIMERS[self.kind][new][1]
            for entry in self._calls:
                if entry[3] not in keep:
                    self._layer._cancel_timer(entry)   # entry[2] = None
            self._calls = tuple(e for e in self._calls if e[2] is not None)

    def _start_timer(self, timer, seconds=None):
        if seconds is None:
            seconds = self._layer.timers.value(timer, self.reliable)
        if seconds is None:
            return
        if timer in _RETRANSMISSION:
            self._interval = seconds
        if seconds == 0:
            self._event(timer, timer)   # "set to zero": fire now, synchronously
        else:
            self._calls += (self._layer._schedule(seconds, self, timer),)

    def _fire(self, entry):     # from the layer's heap: [due, seq, txn, timer]
        self._calls = tuple(e for e in self._calls if e is not entry)
        self._event(entry[3], entry[3])

    def _backoff(self, timer):
        """A, E and G double; E and G are capped at T2 (§17.1.2.2, §17.2.1)."""
        seconds = 2 * self._interval
        if timer is not Timer.A:
            seconds = min(seconds, self._layer.timers.T2)
        self._start_timer(timer, seconds)

    def _transmit(self, message):
        try:
            self._layer._send(message, self.peer)
        except TransportError as e:
            self._event(TRANSPORT_ERROR, e)

    def _cleanup(self):
        cancel = self._layer._cancel_timer
        for entry in self._calls:
            cancel(entry)
        self._calls = ()
        self._layer._forget(self)

    def __repr__(self):
        what = self.method if self._request is None else repr(self._request)
        return f"<{type(self).__name__} {self.kind} {self.state} {what} {self.peer}>"


class ClientTransaction(_Transaction):
    """One request we sent and the responses to it (§17.1).

    ``on_response(response)`` gets every response passed up;
    ``on_error(reason)`` a ``TransactionTimeout`` or ``TransportError``.
    Without ``on_error`` these become a synthesised 408 or 503 passed to
    ``on_response``, as the UAC core would treat them (§8.1.3.1)."""

    __slots__ = ("dest", "key", "on_response", "on_error", "ack", "_cancel")

    def __init__(self, layer, request, dest, key, on_response, on_error=None):
        invite = request.method == "INVITE"
        super().__init__(layer, INVITE_CLIENT if invite else NON_INVITE_CLIENT,
                         request, dest, WAITING)
        self.dest = dest
        self.key = key
        self.on_response = on_response
        self.on_error = on_error
        self.ack = None               # the ACK for a non-2xx, once built
        self._cancel = None           # the CANCEL's transaction, once asked

    def _receive(self, response):
        if response.status < 200:
            event = PROVISIONAL
        elif response.status < 300 and self.kind is INVITE_CLIENT:
            event = SUCCESS
        else:
            event = FINAL
        self._event(event, response)

    def cancel(self, on_response=None, on_error=None):
        """CANCEL this INVITE (§9.1) and return the CANCEL's transaction.

        Sent at once if a provisional response arrived, else held back until
        one does; dropped if a final response comes first.  Returns None when
        it is too late (a final response was received)."""
        if self.kind is not INVITE_CLIENT:
            raise TransactionStateError("CANCEL is only for INVITE (§9.1)")
        if self._cancel is not None:
            return self._cancel
        if self.state not in (CALLING, PROCEEDING):
            return None
        request = _build_cancel(self.request)
        txn = self._layer._client(request, self.dest, on_response, on_error, limit=False)
        self._cancel = txn
        if self.state is PROCEEDING:
            self._layer._start_client(txn)
        return txn

    # -- actions (the tables call them as ``action(txn, arg)``) --------------

    def _retransmit(self, timer):
        self._transmit(self.request)

    def _every_T2(self, timer):
        self._start_timer(timer, self._layer.timers.T2)

    def _pass_up(self, response):
        self.on_response(response)

    def _send_ack(self, response):
        if self.ack is None:
            self.ack = _build_ack(self.request, response)
        self._transmit(self.ack)

    def _release_cancel(self, response):
        txn = self._cancel
        if txn is not None and txn.state is WAITING:
            self._layer._start_client(txn)

    def _timeout(self, timer):
        self._report(TransactionTimeout(f"{timer} fired"), 408)

    def _report_error(self, error):
        self._report(error, 503)

    def _report(self, reason, status):
        if self.on_error is not None:
            self.on_error(reason)
        else:
            self.on_response(make_response(self.request, status))

    def _event(self, event, arg=None):
        handled = super()._event(event, arg)
        if self._cancel is not None and self.state not in (CALLING, PROCEEDING):
            self._cancel._event(DROP)   # a final (or a timeout) came first (§9.1)
        return handled


class ServerTransaction(_Transaction):
    """One request we received and our responses to it (§17.2).

    Bounded: past its final response it keeps its keys, its timers and the
    final's bytes (``last_response``, a ``SentResponse``), or after a 2xx to
    an INVITE (the TU resends that, RFC 6026 §7.1) a skeleton of the request
    (start line, the headers a response copies).  ``request`` is rebuilt
    from these when read (from a final response, To carries its tag)."""

    __slots__ = ("source", "last_response", "_ack_source", "_skeleton", "_uri")

    def __init__(self, layer, request, source):
        invite = request.method == "INVITE"
        super().__init__(layer, INVITE_SERVER if invite else NON_INVITE_SERVER,
                         request, source, PROCEEDING if invite else TRYING)
        self.source = source
        self.last_response = None
        self._ack_source = source
        self._skeleton = self._uri = None

    @property
    def request(self):
        if self._request is not None:
            return self._request
        if self._skeleton is not None:
            return parse_datagram(self._skeleton)
        return Request(self.method, self._uri, _skeleton_headers(self.last_response))

    def respond(self, response):
        """Send ``response`` through the transaction (§17.2.1, §17.2.2)."""
        status = response.status
        if status < 200:
            event = TU_PROVISIONAL
        elif status < 300 and self.kind is INVITE_SERVER:
            event = TU_SUCCESS
        else:
            event = TU_FINAL
        if not self._event(event, response):
            raise TransactionStateError(
                f"cannot send {status} in state {self.state} of {self!r}")

    # -- actions (the tables call them as ``action(txn, arg)``) --------------

    def _send(self, response):
        status = response.status
        if status < 200:
            self.last_response = response
            self._transmit(response)
            return
        invite = self.kind is INVITE_SERVER
        if invite:
            self._layer._expect_ack(self, response)
        request, self._request = self._request, None
        # Matching is by key from now on (§17.2.3): the request itself is
        # dead weight while the transaction waits for Timer H, J or L.
        if invite and status < 300:
            if request is not None:
                self._skeleton = Request(request.method, request.uri_text,
                                         _skeleton_headers(request)).to_bytes()
            self.last_response = None
            self._transmit(response)
        else:
            if request is not None:
                self._uri = request.uri_text
            self.last_response = SentResponse(response)
            self._transmit(self.last_response)

    def _resend(self, arg):
        if self.last_response is not None:
            self._transmit(self.last_response)

    def _ack_to_tu(self, ack):
        self._layer.user.ack_received(ack, self._ack_source)

    def _timeout(self, timer):
        self._report_error(TransactionTimeout(f"{timer} fired: no ACK"))

    def _report_error(self, reason):
        """§17.2.1, §17.2.4: inform the TU."""
        self._layer.user.transaction_error(self, reason)


# -- the machines -----------------------------------------------------------------------

_C, _S = ClientTransaction, ServerTransaction

TRANSITIONS = {
    # RFC 3261 figure 5, RFC 6026 §8.4.
    INVITE_CLIENT: {
        WAITING: {
            START: (CALLING, (_C._retransmit,)),
        },
        CALLING: {
            Timer.A: (CALLING, (_C._retransmit, _C._backoff)),
            Timer.B: (TERMINATED, (_C._timeout,)),
            PROVISIONAL: (PROCEEDING, (_C._pass_up, _C._release_cancel)),
            SUCCESS: (ACCEPTED, (_C._pass_up,)),
            FINAL: (COMPLETED, (_C._send_ack, _C._pass_up)),
            TRANSPORT_ERROR: (TERMINATED, (_C._report_error,)),
        },
        PROCEEDING: {
            PROVISIONAL: (PROCEEDING, (_C._pass_up,)),
            SUCCESS: (ACCEPTED, (_C._pass_up,)),
            FINAL: (COMPLETED, (_C._send_ack, _C._pass_up)),
            TRANSPORT_ERROR: (TERMINATED, (_C._report_error,)),
        },
        COMPLETED: {
            FINAL: (COMPLETED, (_C._send_ack,)),   # a retransmission: ACK again
            Timer.D: (TERMINATED, ()),
            TRANSPORT_ERROR: (TERMINATED, (_C._report_error,)),
        },
        ACCEPTED: {
            SUCCESS: (ACCEPTED, (_C._pass_up,)),    # 2xx retransmissions, forks
            Timer.M: (TERMINATED, ()),
        },
    },
    # RFC 3261 figure 6.
    NON_INVITE_CLIENT: {
        WAITING: {
            START: (TRYING, (_C._retransmit,)),
            DROP: (TERMINATED, ()),
        },
        TRYING: {
            Timer.E: (TRYING, (_C._retransmit, _C._backoff)),
            Timer.F: (TERMINATED, (_C._timeout,)),
            PROVISIONAL: (PROCEEDING, (_C._pass_up,)),
            FINAL: (COMPLETED, (_C._pass_up,)),
            TRANSPORT_ERROR: (TERMINATED, (_C._report_error,)),
        },
        PROCEEDING: {
            Timer.E: (PROCEEDING, (_C._retransmit, _C._every_T2)),
            Timer.F: (TERMINATED, (_C._timeout,)),
            PROVISIONAL: (PROCEEDING, (_C._pass_up,)),
            FINAL: (COMPLETED, (_C._pass_up,)),
            TRANSPORT_ERROR: (TERMINATED, (_C._report_error,)),
        },
        COMPLETED: {
            Timer.K: (TERMINATED, ()),
        },
    },
    # RFC 3261 figure 7, RFC 6026 §8.7.
    INVITE_SERVER: {
        PROCEEDING: {
            REQUEST: (PROCEEDING, (_S._resend,)),
            TU_PROVISIONAL: (PROCEEDING, (_S._send,)),
            TU_SUCCESS: (ACCEPTED, (_S._send,)),
            TU_FINAL: (COMPLETED, (_S._send,)),
            TRANSPORT_ERROR: (TERMINATED, (_S._report_error,)),
        },
        COMPLETED: {
            REQUEST: (COMPLETED, (_S._resend,)),
            Timer.G: (COMPLETED, (_S._resend, _S._backoff)),
            Timer.H: (TERMINATED, (_S._timeout,)),
            ACK: (CONFIRMED, ()),
            TRANSPORT_ERROR: (TERMINATED, (_S._report_error,)),
        },
        CONFIRMED: {
            REQUEST: (CONFIRMED, ()),
            ACK: (CONFIRMED, ()),
            Timer.I: (TERMINATED, ()),
        },
        ACCEPTED: {
            REQUEST: (ACCEPTED, ()),
            ACK: (ACCEPTED, (_S._ack_to_tu,)),
            TU_SUCCESS: (ACCEPTED, (_S._send,)),   # the TU's 2xx retransmissions
            Timer.L: (TERMINATED, ()),
            # Stay: INVITE retransmissions must still be absorbed; the TU
            # learns its 2xx did not go out and ends the dialog itself.
            TRANSPORT_ERROR: (ACCEPTED, (_S._report_error,)),
        },
    },
    # RFC 3261 figure 8.
    NON_INVITE_SERVER: {
        TRYING: {
            REQUEST: (TRYING, ()),
            TU_PROVISIONAL: (PROCEEDING, (_S._send,)),
            TU_FINAL: (COMPLETED, (_S._send,)),
            TRANSPORT_ERROR: (TERMINATED, (_S._report_error,)),
        },
        PROCEEDING: {
            REQUEST: (PROCEEDING, (_S._resend,)),
            TU_PROVISIONAL: (PROCEEDING, (_S._send,)),
            TU_FINAL: (COMPLETED, (_S._send,)),
            TRANSPORT_ERROR: (TERMINATED, (_S._report_error,)),
        },
        COMPLETED: {
            REQUEST: (COMPLETED, (_S._resend,)),
            Timer.J: (TERMINATED, ()),
            TRANSPORT_ERROR: (TERMINATED, (_S._report_error,)),
        },
    },
}


def _timers(letters):
    return tuple(Timer(letter) for letter in letters)


#: (timers started on entering the state, timers left running in it); every
#: other pending timer is cancelled on entry.
TIMERS = {
    INVITE_CLIENT: {WAITING: ((), ()), CALLING: (_timers("AB"), _timers("AB")),
                    PROCEEDING: ((), ()), COMPLETED: (_timers("D"), _timers("D")),
                    ACCEPTED: (_timers("M"), _timers("M"))},
    NON_INVITE_CLIENT: {WAITING: ((), ()), TRYING: (_timers("EF"), _timers("EF")),
                        PROCEEDING: ((), _timers("EF")),
                        COMPLETED: (_timers("K"), _timers("K"))},
    INVITE_SERVER: {PROCEEDING: ((), ()), COMPLETED: (_timers("GH"), _timers("GH")),
                    CONFIRMED: (_timers("I"), _timers("I")),
                    ACCEPTED: (_timers("L"), _timers("L"))},
    NON_INVITE_SERVER: {TRYING: ((), ()), PROCEEDING: ((), ()),
                        COMPLETED: (_timers("J"), _timers("J"))},
}


# -- messages a transaction builds or keeps -------------------------------------------

def _skeleton_headers(message):
    """The headers of ``message`` a response copies (§8.2.6.2), in order."""
    return Headers.from_pairs((n, v) for n, v in message.headers if canonical_name(n)[0]
                              in ("via", "from", "to", "call-id", "cseq"))


def _copy(request, method, to):
    """A request sharing Request-URI, Call-ID, From, CSeq number, the top Via
    only and the Route set of ``request`` (§9.1, §17.1.1.3)."""
    rh = request.headers
    h = Headers()
    h.add("Via", rh.get_all("via")[0])
    h.add("Max-Forwards", rh.get("max-forwards", "70"))
    for route in rh.lines("route"):
        h.add("Route", route)
    h.add("From", rh.get("from"))
    h.add("To", to)
    h.add("Call-ID", rh.get("call-id"))
    h.add("CSeq", f"{request.cseq.seq} {method}")
    return Request(method, request.uri_text, h)


def _build_ack(invite, response):
    """§17.1.1.3: To from the response, so it carries the UAS's tag."""
    return _copy(invite, "ACK", response.headers.get("to"))


def _build_cancel(invite):
    """§9.1: To as in the request, same branch, same destination."""
    return _copy(invite, "CANCEL", invite.headers.get("to"))
