"""Which requests come from a focus of this deployment (docs/design.md, "Trust").

Only a focus may subscribe to a conference's multifocus state, forward or
hand over a REFER, open a cascade leg, or speak in the dialogs between
foci.  Trust is by proof, never by a header:

- With ``[multifocus] secret_file`` the foci share a secret and every
  request between them carries a proof (sip/proof.py, signed by the UA
  core); a request without a valid one is no focus's, whatever its
  address, and what was written into the replicated state counts for
  nothing here.
- Over TLS, a client certificate (verified against ``[tls] ca``) that
  names the host of a configured peer proves that peer (RFC 5922 §7.1:
  subjectAltName DNS or IP).
- Without a secret (a single machine), a source on a loopback address that
  is a configured peer or a focus of a conference we share is trusted by
  its address, with a warning at start; nothing else is.  Datagrams come
  from the sender's listening port; stream connections from any port, so
  those match on the host alone.
"""

import ipaddress

from twisted.logger import Logger

__all__ = ["FocusTrust"]


def _loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FocusTrust:
    """Decides whether a request comes from a trusted focus."""

    log = Logger()

    def __init__(self, node, rooms, prover=None, certificate_names=None):
        self.node = node
        self.rooms = rooms
        self.prover = prover
        #: certificate_names(peer): a TLS connection's verified client names
        self.certificate_names = certificate_names or (lambda peer: frozenset())
        self._checked = (None, False)   # (the request last checked, its verdict)

    def warn_if_open(self):
        if self.prover is None:
            self.log.warn("no [multifocus] secret_file: foci on loopback addresses are "
                          "trusted by address, foci anywhere else not at all")

    def proven(self, request, source):
        """Does ``request`` carry a valid proof, or come over TLS from a
        configured peer's certificate?  Checked once per request (a proof is
        accepted once: a second check would call it replayed)."""
        if source.transport == "TLS":
            names = self.certificate_names(source)
            if names and any(uri.host.strip("[]") in names for _, uri in self.node.peers):
                return True
        if self.prover is None:
            return False
        last, verdict = self._checked
        if last is not request:
            verdict = self.prover.check(request).ok
            self._checked = (request, verdict)
        return verdict

    def trusts(self, request, source):
        """Is ``request`` from ``source`` a trusted focus's?"""
        if self.proven(request, source):
            return True
        if self.prover is not None:
            return False
        if not _loopback(source.host):
            return False

        def match(focus):               # a focus id: sip:HOST:PORT
            host, _, port = focus.partition(":")[2].rpartition(":")
            return host.strip("[]") == source.host and (
                source.reliable or int(port) == source.port)
        if any(match(uri) for uri, _ in self.node.peers):
            return True
        return any(match(uri) for room in self.rooms for uri in room.foci())
