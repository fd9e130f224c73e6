"""The media mesh between foci (issue 6; design-notes, "Media").

Every pair of foci of a conference has one INVITE dialog between them, a
*cascade leg*: each focus sends the other the mix of its own members only
and adds what it receives to what its members hear (mixer.py: a peer
hears our members, never another peer's stream nor its own), so each
member hears every other member once, across all foci, and nobody hears
an echo.

- The focus with the lower id dials, once its subscription to the other
  is up (``link_up``), so a pair has one leg; the other answers.  The
  INVITE goes to ``sip:NAME@peer`` and carries ``X-Mfocus-Cascade: <our
  focus id>``; it is taken only from a trusted focus (403 otherwise).
- A cascade leg is a ``CallLeg`` with ``peer`` set: no member, so it is not
  in the conference state and not counted in the load.  A lost link, a
  failed or departed focus ends it (``link_down``: BYE); a new link dials
  again.
"""

from twisted.logger import Logger

from ..media.rtp import PortsExhausted
from ..media.sdp import SDPError
from ..sip.dialog import DialogError
from ..sip.errors import SIPError
from ..sip.ids import new_tag
from ..sip.uri import URI
from ..sip.values import NameAddr
from .call import CallLeg, parse_offer
from .mesh import focus_id

__all__ = ["Cascades", "MARKER"]

MARKER = "X-Mfocus-Cascade"


class Cascades:
    """This focus's cascade legs: (conference, peer focus id) -> CallLeg."""

    log = Logger()

    def __init__(self, focus):
        self.focus = focus
        self.legs = {}

    # -- dialling ------------------------------------------------------------

    def link_up(self, conference, peer):
        """Our subscription to ``peer`` is up: dial it if we are the lower id."""
        focus = self.focus
        if focus.stopping or focus.uri >= peer or (conference, peer) in self.legs:
            return
        try:
            rtp = focus.rtp_pool.allocate()
        except PortsExhausted:
            self.log.info("{conf}: no RTP ports for the cascade to {peer}",
                          conf=conference.name, peer=peer)
            return
        leg = CallLeg(focus, conference, rtp, "UDP")
        leg.peer = peer
        self.legs[(conference, peer)] = leg

        def report(status, reason):
            if status >= 300:
                self.log.info("{conf}: cascade to {peer} refused: {status} {reason}",
                              conf=conference.name, peer=peer, status=status, reason=reason)
        target = URI.parse(peer).replace(user=conference.name)
        leg.dial(target, None, report, extra_headers=[(MARKER, f"<{focus.uri}>")])

    def link_down(self, conference, peer):
        """The link to ``peer`` is gone (lost, failed, left): end the leg."""
        leg = self.legs.pop((conference, peer), None)
        if leg is not None and leg.state != "ended":
            leg.hangup()

    # -- answering -------------------------------------------------------------

    def accept(self, txn, request, source):
        """A cascade INVITE from another focus."""
        focus = self.focus
        respond = focus.policy.respond
        if not focus.trusts(source):
            txn.respond(respond(request, 403, "Cascade From Untrusted Node", to_tag=new_tag()))
            return
        conference = focus.conferences.get(request.uri.user or "")
        if conference is None:
            txn.respond(respond(request, 404, "No Such Conference", to_tag=new_tag()))
            return
        try:
            peer = focus_id(NameAddr.parse(request.headers.get(MARKER), MARKER).uri)
        except (SIPError, ValueError) as e:
            txn.respond(respond(request, 400, f"Bad {MARKER}: {e}", to_tag=new_tag()))
            return
        try:
            offer = parse_offer(request)
        except SDPError as e:
            txn.respond(respond(request, 400, e.reason, to_tag=new_tag()))
            return
        try:
            rtp = focus.rtp_pool.allocate()
        except PortsExhausted:
            txn.respond(respond(request, 503, "Out Of Media Ports", to_tag=new_tag(),
                                headers=[("Retry-After", "30")]))
            return
        old = self.legs.pop((conference, peer), None)
        leg = CallLeg(focus, conference, rtp, source.transport)
        leg.peer = peer
        self.legs[(conference, peer)] = leg
        if old is not None and old.state != "ended":
            old.hangup()
        try:
            leg.accept(txn, request, source, offer)
        except (SDPError, DialogError) as e:
            txn.respond(respond(request, getattr(e, "status", 488), e.reason, to_tag=new_tag()))
            leg._end("no cascade")

    # -- the leg's life ------------------------------------------------------------

    def ended(self, leg):
        if self.legs.get((leg.conference, leg.peer)) is leg:
            del self.legs[(leg.conference, leg.peer)]

    def stop(self):
        for leg in list(self.legs.values()):
            if leg.state != "ended":
                leg.hangup()
        self.legs.clear()
