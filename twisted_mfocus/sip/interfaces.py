"""What the SIP stack expects of the application above it, sans-IO.

The transaction layer (``transaction.py``) calls its user for everything
it does not decide itself; ``SIPService`` (``stack.py``) also tells the
user when the stack exists and when it stops.  Declaring the contract
lets the stack call every method unconditionally, and lets a test check a
transaction user with ``zope.interface.verify.verifyObject``.
"""

from zope.interface import Interface

__all__ = ["ITransactionUser"]


class ITransactionUser(Interface):
    """The transaction user (TU) of RFC 3261 §17: the focus, or the probe
    UAS before it."""

    def request_received(txn, request, source):
        """A new request, other than ACK and CANCEL, arrived from ``source``.

        ``txn`` is its ``ServerTransaction``: answer through
        ``txn.respond``.  Retransmissions never get here (the transaction
        absorbs them, §17.2); if this raises, the layer answers 500."""

    def cancel_received(txn, cancel, source, invite_txn):
        """A CANCEL arrived (§9.2).

        ``txn`` is the CANCEL's own transaction, which the TU answers (200,
        or 481 when ``invite_txn``, the transaction it matched, is None);
        the TU also decides what becomes of the INVITE, since only it knows
        whether the INVITE was answered yet."""

    def ack_received(ack, source):
        """An ACK no INVITE server transaction absorbed: the ACK for a 2xx,
        which is the dialog's business, not a transaction's (§13.2.2.4,
        §17.2.3; RFC 6026 §8.7)."""

    def transaction_error(txn, reason):
        """The server transaction ``txn`` failed: Timer H fired (no ACK for
        our final response) or a response could not be sent
        (``TransportError``).  Only the TU can undo what the request did
        (§17.2.1, §17.2.4)."""

    def stray_response(response, source):
        """A response matched no client transaction, e.g. a 2xx
        retransmission after Timer M.  It goes to the core all the same
        (§18.1.2), which may still want it or, usually, drops it."""

    def exempt(request, source):
        """Is ``request`` free of its source's request budget (budget.py)
        though that source is over it?  A proven focus is: the traffic
        between foci grows with the conference, not with one caller.
        Asked only of requests over budget, before any transaction."""

    def attach(service):
        """The stack exists: ``service`` (the ``SIPService``) has its
        transports and transactions, so the TU can send requests from now
        on.  Called once, before any message arrives."""

    def shutdown():
        """The service is stopping: end calls and subscriptions while the
        transports are still up.  Returns a Deferred that fires when done
        (the stack waits a bounded time for it), or None."""
