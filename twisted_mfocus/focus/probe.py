"""The minimal UAS of the daemon: enough to be probed and to be robust.

It is the transaction user until the conference focus takes over: every
request passes the RFC 3261 §8.2 checks (``UASPolicy``), OPTIONS is
answered with our capabilities (§11.2), REGISTER with 405 (we are not a
registrar), INVITE with 404 (there is no conference of that name yet), BYE
with 481 (there are no dialogs yet), CANCEL per §9.2.
"""

from twisted.logger import Logger
from zope.interface import implementer

from ..sip.ids import new_tag
from ..sip.interfaces import ITransactionUser
from ..sip.uas import UASPolicy

__all__ = ["ProbeUAS", "default_policy"]

ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")


def default_policy(server="mfocus"):
    return UASPolicy(allow=ALLOW, supported=(), accept=("application/sdp",),
                     extra_headers=[("Server", server)])


@implementer(ITransactionUser)
class ProbeUAS:
    """Transaction user answering every request statelessly from the
    application's point of view (the transaction layer keeps the state)."""

    log = Logger()

    def __init__(self, policy=None):
        self.policy = policy or default_policy()

    def attach(self, service):
        """Nothing to set up: the probe never sends a request of its own."""

    def shutdown(self):
        """Nothing to end: the probe holds no dialogs or subscriptions."""

    def request_received(self, txn, request, source):
        refusal = self.policy.inspect(request)
        if refusal is not None:
            txn.respond(refusal)
            return
        if request.method == "OPTIONS":
            txn.respond(self.policy.respond(request, 200, to_tag=new_tag(),
                                            headers=self.policy.capability_headers()))
        elif request.method == "INVITE":
            txn.respond(self.policy.respond(request, 404, "No Such Conference",
                                            to_tag=new_tag()))
        else:   # BYE: no dialog can exist yet (§12.2.2)
            txn.respond(self.policy.respond(request, 481, to_tag=new_tag()))

    def exempt(self, request, source):
        return False

    def cancel_received(self, txn, cancel, source, invite_txn):
        # §9.2: 200 to the CANCEL if it matched, 481 otherwise; the INVITE
        # itself was already answered (we answer INVITEs at once).
        txn.respond(self.policy.respond(cancel, 200 if invite_txn else 481,
                                        to_tag=new_tag()))

    def ack_received(self, ack, source):
        """A 2xx ACK: we never send 2xx to INVITE here, so nothing to do."""

    def transaction_error(self, txn, reason):
        """Timer H (no ACK for our final response) or a failed send."""
        self.log.info("transaction {method} from {peer} failed: {reason}",
                      method=txn.request.method, peer=str(txn.source), reason=reason)

    def stray_response(self, response, source):
        """Responses with no transaction are dropped (§18.1.2)."""
        self.log.debug("stray response {status} from {peer}",
                       status=response.status, peer=str(source))
