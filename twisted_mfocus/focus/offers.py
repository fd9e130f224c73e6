"""What a call offers and answers, as this focus's settings shape it:
``[media] codecs`` (best first) and ``[media] srtp`` (media/srtp.py
``Policy``), over the transport the call's signalling uses.

One ``CallMedia`` per call leg (call.py): its SDP session (our o= line),
its RTP port, and the offer/answer functions of media/sdp.py applied with
the focus's settings, so the leg itself only says when.
"""

from ..media.sdp import NOT_ACCEPTABLE_HERE, LocalSession, SDPError, answer, offer
from ..media.srtp import NoSecureOffer

__all__ = ["CallMedia"]


class CallMedia:
    """The offer/answer side of one call."""

    def __init__(self, node, address, rtp_port):
        self.node = node
        self.sdp = LocalSession(address)
        self.rtp_port = rtp_port

    def codecs(self, negotiated=None):
        """``[media] codecs``; in a call, its codec first (a re-INVITE of
        ours keeps the coding state where it can)."""
        names = self.node.config.codecs
        current = negotiated.codec if negotiated is not None else None
        return (current,) + tuple(n for n in names if n != current) if current else names

    def answer(self, offer_sdp, transport):
        """(our answer, Negotiated); SDPError (488) when it cannot be taken."""
        return answer(offer_sdp, self.sdp, self.rtp_port, transport, self.node.srtp,
                      codecs=self.codecs(), mix_rate=self.node.config.mix_rate)

    def offer(self, transport, srtp_profile=None, negotiated=None):
        """Our offer over ``transport``: SRTP on ``srtp_profile`` (the
        member's profile when it moves) or as the policy says; a re-INVITE
        passes the call's ``negotiated`` and keeps its profile.  Raises
        NoSecureOffer when SRTP is mandatory and keys cannot travel."""
        if negotiated is not None:
            profile = negotiated.srtp_profile
        else:
            profile = self.node.srtp.offer_profile(transport, srtp_profile)
        return offer(self.sdp, self.rtp_port, srtp_profile=profile,
                     codecs=self.codecs(negotiated), mix_rate=self.node.config.mix_rate)

    def late_offer(self, transport):
        """Our offer in a 2xx to an INVITE without one; 488 if we may not."""
        try:
            return self.offer(transport)
        except NoSecureOffer as e:
            raise SDPError("SDES keys need TLS", NOT_ACCEPTABLE_HERE, str(e)) from None
