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
  those match on the host alone.  Never for an agent, nor for a
  conference with a key of its own (below).

Agents (docs/design.md, "Peer-to-peer") share no secret: a conference
that grows from one user's agent onto its members' agents has a *key* of
its own (``ConferenceKey``), made by the focus that first recruits a
member's agent and handed over in that recruitment (agent.py).  Every
request naming the conference (``named_room``: its To, From or
Request-URI user) then carries a proof under that key, and only such a
proof makes a focus of that conference.
"""

import base64
import ipaddress
import re
import secrets

from twisted.logger import Logger

from ..config import Role
from ..sip.proof import Prover
from ..sip.uas import Refused

__all__ = ["KEY_HEADER", "ConferenceKey", "FocusTrust"]

#: The header of a recruitment SUBSCRIBE carrying the conference's key.
KEY_HEADER = "X-Mfocus-Conference-Key"
KEY_BYTES = 32
_KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")   # 32 octets, canonical


def _loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConferenceKey:
    """One conference's secret among its foci, and the prover under it."""

    __slots__ = ("prover", "secret")

    def __init__(self, secret, clock):
        self.secret = secret
        self.prover = Prover(secret, clock)

    @classmethod
    def new(cls, clock):
        return cls(secrets.token_bytes(KEY_BYTES), clock)

    @classmethod
    def parse(cls, text, clock):
        """The key a recruitment carried; ``Refused`` 400 if it is not one."""
        if text is None or _KEY_TEXT.fullmatch(text) is None:
            raise Refused(400, f"Bad {KEY_HEADER}", tagged=True)
        return cls(base64.urlsafe_b64decode(text + "="), clock)

    def text(self):
        return base64.urlsafe_b64encode(self.secret).rstrip(b"=").decode("ascii")


class FocusTrust:
    """Decides whether a request comes from a trusted focus."""

    log = Logger()

    def __init__(self, node, rooms, prover=None, certificate_names=None):
        self.node = node
        self.rooms = rooms
        self.prover = prover
        self.clock = None               # for conference keys (set with the prover)
        #: certificate_names(peer): a TLS connection's verified client names
        self.certificate_names = certificate_names or (lambda peer: frozenset())
        # (the request last checked, the room whose key it was checked
        # against or None, its verdict)
        self._checked = (None, None, False)

    # -- conference keys ----------------------------------------------------

    def named_room(self, request):
        """The room a request between foci is about: the first of its To,
        From and Request-URI whose user names a room here.  The sender signs
        by the same rule (``signer_for``), so both pick the same key."""
        rooms = self.rooms
        for uri in (request.to.uri, request.from_.uri, request.uri):
            user = uri.user if uri.is_sip else None
            if user and user in rooms:
                return rooms.get(user)
        return None

    def key_of(self, room):
        """``room``'s key, made now if it has none (we recruit a member's
        agent: the first focus of the conference to need one)."""
        if room.key is None:
            self.adopt_key(room, ConferenceKey.new(self.clock))
        return room.key

    def adopt_key(self, room, key):
        self.rooms.set_key(room, key)

    def signer_for(self, request, to_focus):
        """The prover that signs ``request``: its conference's key if it
        names one with a key (members' requests too: a member may be a
        focus's agent, and a phone ignores the header), else the
        deployment's for a request to a focus, else None."""
        if self.rooms.keyed:
            room = self.named_room(request)
            if room is not None and room.key is not None:
                return room.key.prover
        return self.prover if to_focus else None

    def warn_if_open(self):
        if self.prover is None:
            self.log.warn("no [multifocus] secret_file: foci on loopback addresses are "
                          "trusted by address, foci anywhere else not at all")

    def proven(self, request, source, room=None):
        """Does ``request`` carry a valid proof (under the key of ``room``,
        by default the room it names, else the deployment's), or come over
        TLS from a configured peer's certificate?  Checked once per request
        (a proof is accepted once: a second check would call it replayed),
        so a request naming one room is no proof for another."""
        if source.transport == "TLS":
            names = self.certificate_names(source)
            if names and any(uri.host.strip("[]") in names for _, uri in self.node.peers):
                return True
        last, checked_room, verdict = self._checked
        if last is not request:
            checked_room = self.named_room(request) if self.rooms.keyed else None
            if checked_room is not None and checked_room.key is not None:
                prover = checked_room.key.prover
            else:
                checked_room, prover = None, self.prover
            verdict = prover is not None and prover.check(request).ok
            self._checked = (request, checked_room, verdict)
        if room is not None and room is not checked_room and (
                room.key is not None or checked_room is not None):
            return False                # a conference's key proves nothing elsewhere
        return verdict

    def trusts(self, request, source, room=None):
        """Is ``request`` from ``source`` a trusted focus's (of ``room``,
        where the caller acts on one)?"""
        if self.proven(request, source, room):
            return True
        if self.prover is not None or self.node.role is Role.AGENT:
            return False
        named = room or self.named_room(request)
        if named is not None and named.key is not None:
            return False
        if not _loopback(source.host):
            return False

        def match(focus):               # a focus id: sip:HOST:PORT
            host, _, port = focus.partition(":")[2].rpartition(":")
            return host.strip("[]") == source.host and (
                source.reliable or int(port) == source.port)
        if any(match(uri) for uri, _ in self.node.peers):
            return True
        return any(match(uri) for room in self.rooms if room.key is None
                   for uri in room.foci())
