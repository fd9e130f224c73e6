"""Admitting a dial-in INVITE, one way for members, cascades and an
agent's calls: what it must carry before a call leg exists
(``admit_invite``: 406 when its Accept takes no SDP, 400 for an offer that
does not parse, 503 with Retry-After when no media port is free), and the
answer that makes the leg a call or ends it (``answer_invite``: 488 with a
Warning for media we cannot take, 422 for a session interval too small).
"""

from ..media.rtp import PortsExhausted
from ..media.sdp import SDPError, warning_headers
from ..sip.dialog import DialogError
from ..sip.ids import new_tag
from ..sip.uas import Refused, accepts
from .call import SDP, parse_offer

__all__ = ["admit_invite", "answer_invite"]

OUT_OF_PORTS_RETRY = 30     # Retry-After (s) when no RTP port is free


def admit_invite(request, rtp_pool):
    """(offer, RTP endpoint) for a dial-in INVITE, or ``Refused``: 406 when
    its Accept takes no SDP (our 200 carries SDP; RFC 4475 §3.3.15), 400 for
    an offer that does not parse, 503 with Retry-After when no port is free."""
    if not accepts(request, SDP):
        raise Refused(406, "Accept Does Not Take application/sdp",
                      [("Accept", SDP)], tagged=True)
    try:
        offer_sdp = parse_offer(request)
    except SDPError as e:
        raise Refused(e.status, e.reason, tagged=True) from e
    try:
        rtp = rtp_pool.allocate()
    except PortsExhausted as e:
        raise Refused(503, "Out Of Media Ports", [("Retry-After", str(OUT_OF_PORTS_RETRY))],
                      tagged=True) from e
    return offer_sdp, rtp


def answer_invite(leg, txn, request, source, offer_sdp, policy, local_tag=None):
    """``leg.accept`` the INVITE; an error answers with its own status (488
    for an offer we cannot take, the dialog's for a bad dialog) and ends
    the leg.  True if the call was answered 200."""
    try:
        leg.accept(txn, request, source, offer_sdp, local_tag)
    except Refused as e:                        # 422: session interval too small
        txn.respond(policy.respond(request, e.status, e.reason, headers=e.headers,
                                   to_tag=local_tag or new_tag()))
        leg.end("session timer refused")
        return False
    except (SDPError, DialogError) as e:
        warning = warning_headers(e, leg.ua.local_hostport(leg.transport))
        txn.respond(policy.respond(request, e.status, e.reason, to_tag=local_tag or new_tag(),
                                   headers=warning))
        leg.end("no acceptable media" if isinstance(e, SDPError) else "no dialog")
        return False
    except Exception:
        leg.end("internal error")
        raise
    return True
