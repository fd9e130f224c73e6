"""The media mesh between foci (docs/design.md, "Cascade").

Every pair of foci of a conference has one INVITE dialog between them, a
*cascade leg*: each focus sends the other the mix of its own members only
and adds what it receives to what its members hear (mixer.py: a peer
hears our members, never another peer's stream nor its own), so each
member hears every other member once, across all foci, and nobody hears
an echo.

- The focus with the lower id dials, once its subscription to the other
  is up (``link_up``), so a pair has one leg; the other answers.  The
  INVITE goes to ``sip:NAME@peer`` and carries ``X-Mfocus-Cascade: <our
  focus id>``; the focus takes it only from a trusted focus (403
  otherwise) and admits it like any INVITE (call.py, ``admit_invite``).
- A cascade leg is a ``CallLeg`` with ``peer`` set: no member, so it is not
  in the conference state and not counted in the load.  A lost link, a
  failed or departed focus ends it (``link_down``: BYE); a new link dials
  again.
- The mix between foci is private like the members' (``[media] srtp``):
  unless SRTP is off, the cascade offers RTP/SAVP.  Its keys travel in the
  SDP, so only over TLS (RFC 4568 §8.3): when both foci have a TLS
  listener (the peer's is in its focus record, so the dialler waits for
  that record) the INVITE goes there; otherwise it goes over UDP, plain
  with ``optional`` and not at all with ``mandatory`` (logged).
"""

from twisted.logger import Logger

from ..media.rtp import PortsExhausted
from ..media.srtp import SECURE_PROFILES, Mode
from ..sip.uri import URI
from ..sip.values import NameAddr
from .admission import answer_invite
from .call import CallLeg, LegState
from .node import focus_id

__all__ = ["Cascades", "MARKER", "peer_of"]

MARKER = "X-Mfocus-Cascade"


def peer_of(request):
    """The focus id a cascade INVITE's marker names (SIPError, ValueError)."""
    return focus_id(NameAddr.parse(request.headers.get(MARKER), MARKER).uri)


class Cascades:
    """One room's cascade legs: peer focus id -> CallLeg."""

    log = Logger()

    def __init__(self, room, node, ua, policy, rtp_pool, focus_record):
        self.room = room
        self.node = node
        self.ua = ua
        self.policy = policy
        self.rtp_pool = rtp_pool
        #: focus_record(uri): what a focus says of itself (None: not known yet)
        self.focus_record = focus_record
        self.legs = {}
        self.waiting = set()        # linked peers whose record we wait for

    def up(self):
        """The peers we have a confirmed cascade leg with, sorted."""
        return sorted(peer for peer, leg in self.legs.items()
                      if leg.state is LegState.CONFIRMED)

    # -- dialling ------------------------------------------------------------

    def link_up(self, peer):
        """Our subscription to ``peer`` is up: dial it if we are the lower id
        (once we know whether it takes TLS)."""
        node = self.node
        if node.stopping or node.uri >= peer or peer in self.legs:
            return
        if self.focus_record(peer) is None:
            self.waiting.add(peer)
            return
        self._dial(peer)

    def records_changed(self):
        """Focus records arrived: dial the peers that waited for theirs."""
        for peer in sorted(self.waiting):
            if self.focus_record(peer) is not None:
                self.waiting.discard(peer)
                self.link_up(peer)

    def target(self, peer):
        """Where the cascade INVITE to ``peer`` goes: its TLS listener when
        SRTP keys may be offered and both of us listen on TLS, else the
        focus id (UDP)."""
        record = self.focus_record(peer)
        tls = record.tls if record is not None else None
        if tls and self.node.tls and self.node.srtp.mode is not Mode.OFF:
            host, _, port = tls.rpartition(":")
            return URI("sip", user=self.room.name, host=host, port=int(port),
                       params={"transport": "tls"})
        return URI.parse(peer).replace(user=self.room.name)

    def _dial(self, peer):
        node, room = self.node, self.room
        try:
            rtp = self.rtp_pool.allocate()
        except PortsExhausted:
            self.log.info("{conf}: no RTP ports for the cascade to {peer}",
                          conf=room.name, peer=peer)
            return
        target = self.target(peer)
        leg = self.legs[peer] = CallLeg(self.ua, self.policy, room, rtp,
                                        (target.transport or "udp").upper(), peer=peer)

        def report(status, reason):
            if status >= 300:
                self.log.info("{conf}: cascade to {peer} refused: {status} {reason}",
                              conf=room.name, peer=peer, status=status, reason=reason)
        leg.dial(target, None, report, extra_headers=[(MARKER, f"<{node.uri}>")],
                 srtp_profile=SECURE_PROFILES[0])

    def link_down(self, peer):
        """The link to ``peer`` is gone (lost, failed, left): end the leg."""
        self.waiting.discard(peer)
        leg = self.legs.pop(peer, None)
        if leg is not None and leg.state is not LegState.ENDED:
            leg.hangup()

    # -- answering -------------------------------------------------------------

    def answer(self, txn, request, source, peer, offer, rtp):
        """A cascade INVITE from ``peer``, admitted (trusted, offer and RTP
        pair in hand): it replaces any leg we had with that focus."""
        old = self.legs.pop(peer, None)
        leg = self.legs[peer] = CallLeg(self.ua, self.policy, self.room, rtp,
                                        source.transport, peer=peer)
        if old is not None and old.state is not LegState.ENDED:
            old.hangup()
        answer_invite(leg, txn, request, source, offer, self.policy)

    # -- the leg's life ------------------------------------------------------------

    def ended(self, leg):
        if self.legs.get(leg.peer) is leg:
            del self.legs[leg.peer]

    def stop(self):
        self.waiting.clear()
        for leg in list(self.legs.values()):
            if leg.state is not LegState.ENDED:
                leg.hangup()
        self.legs.clear()
