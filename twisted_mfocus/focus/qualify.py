"""Qualify: is a member's phone still there?  (``[focus] qualify``)

A phone that vanished without BYE (crashed, unplugged, its NAT binding
gone) may leave its RTP silent for a while or, worse, keep a stale source
sending; the signalling path tells for sure.  Every ``interval`` seconds
the focus sends an OPTIONS inside the member's call (RFC 3261 §11: a
request in a dialog, so it follows the dialog's route and flow).

- Any final response means the phone is there, whatever its status (a
  405 or 501 still came from the phone), except 481: the phone no longer
  knows the call (§12.2.2), so it is over.
- No response at all (the transaction's Timer F, 64*T1: §17.1.2.2) means
  it is gone.  Either way ``on_gone(why)`` is called once and nothing
  more is sent.
- One OPTIONS at a time: the next is scheduled when the last is answered.
- ``rtt``: how long the last answer took (seconds; None before one): how
  near the member is, which an agent asks first to be a focus (mesh.py).

Sans-IO: time comes from the injected clock, sending from ``ping``.
"""

__all__ = ["Qualifier"]

CALL_GONE = 481     # RFC 3261 §12.2.2: the dialog does not exist at the phone


def _stopped(*args):
    """What a stopped Qualifier calls: nothing."""


class Qualifier:
    """OPTIONS pings of one call.  ``ping(answered)`` sends one and calls
    ``answered(status)`` with its final status, or None when none came."""

    def __init__(self, clock, interval, ping, on_gone):
        self.clock = clock
        self.interval = interval
        self.ping = ping
        self.on_gone = on_gone
        self.sent = self.answered = 0
        self.rtt = None
        self._sent_at = None
        self._call = None
        self._stopped = False

    def start(self):
        """The call is up: the first OPTIONS ``interval`` seconds from now."""
        if self.interval > 0 and not self._stopped and self._call is None:
            self._call = self.clock.callLater(self.interval, self._send)

    def stop(self):
        """No more OPTIONS; the call's callbacks are let go (they refer back
        to the call: a cycle only the garbage collector would free)."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.ping = self.on_gone = _stopped

    def _send(self):
        self._call = None
        if self._stopped:
            return
        self.sent += 1
        self._sent_at = self.clock.seconds()
        self.ping(self._answered)

    def _answered(self, status):
        if self._stopped:
            return
        if status is None or status == CALL_GONE:
            on_gone = self.on_gone
            self.stop()
            on_gone("no answer to OPTIONS" if status is None
                    else "OPTIONS answered 481: the phone has no such call")
            return
        self.answered += 1
        self.rtt = self.clock.seconds() - self._sent_at
        self.start()
