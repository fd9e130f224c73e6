"""Handing calls to foci with room: the two delegation cases of the design
(docs/design.md, "Delegation").

Case 1, a newcomer INVITEs a full focus: the focus accepts the call, then
REFERs the least loaded focus with room to take the member.  That focus
INVITEs the member afresh (From and Contact = the conference URI with
``isfocus``, ``Record-Route`` to itself) with ``Replaces`` for the first
dialog (RFC 3891), so the phone swaps calls by itself.  When the referred
INVITE succeeded (the sipfrag says 2xx) the first focus waits
``handover_grace`` for the phone's BYE of the replaced call, then ends it
itself (a phone without Replaces support).

Case 2, a REFER reaches a full focus: it is forwarded to a focus with room
with the marker header (``X-Mfocus-Forwarded: <origin>;hops=N``) and
``Referred-By``; the sipfrag progress of the forwarded REFER is relayed to
the original referrer.

A member whose call is SRTP moves with ``;srtp=savp`` (``savpf``, ``avp``:
its profile) on the marker, so the taker offers it SRTP again (a phone
that must encrypt refuses a plain offer).

Rules of this module:

- Only foci of the conference's replicated state are targets; a focus gets
  a delegation only while it has room counting the delegations already in
  flight to it (``Mesh.reserved``), so a burst does not overfill it.
- A failed delegation tries the next focus; when none is left the member
  (case 1) is ended with BYE and the referrer (case 2) hears the failure.
- Forwarding is bounded by ``max_hops``: loops end.
"""

import enum
from typing import NamedTuple, Optional

from twisted.logger import Logger

from ..sip.uri import URI
from ..sip.values import NameAddr
from .call import LegState
from .subscriber import Subscriber, out_of_dialog_request

__all__ = ["MARKER", "Delegator", "Forwarded", "HandOver", "parse_marker", "sipfrag_status"]

#: The forwarded-REFER marker (docs/design.md, "Case 2: a REFER reaches a full focus").
MARKER = "X-Mfocus-Forwarded"
WAIT_FOR_ROOM = 10.0        # seconds a provisionally accepted call waits for a focus
#: Statuses of a forwarded REFER after which the next focus is tried
TRY_NEXT = (403, 404, 482, 486, 503)
MAX_FORWARD_TRIES = 8


class HandOver(enum.Enum):
    """What ``hand_over`` does when no focus has room."""

    WAIT = "wait"           # a call accepted beyond capacity: wait, then end it
    KEEP = "keep"           # rebalancing: keep the call here
    OVERFILL = "overfill"   # we are leaving: the least loaded focus, room or not


#: the marker's srtp parameter: a media profile as a SIP token
_SRTP_TOKENS = {"RTP/SAVP": "savp", "RTP/SAVPF": "savpf", "RTP/AVP": "avp"}
_SRTP_PROFILES = {token: profile for profile, token in _SRTP_TOKENS.items()}


class Forwarded(NamedTuple):
    """What a forwarded REFER's marker says: the focus that began the
    forwarding, the hops so far, the moving member's SRTP profile (None:
    plain or unknown)."""

    origin: str
    hops: int
    srtp: Optional[str] = None

    def header(self):
        srtp = f";srtp={_SRTP_TOKENS[self.srtp]}" if self.srtp else ""
        return f"<{self.origin}>;hops={self.hops}{srtp}"

    def next_hop(self):
        return self._replace(hops=self.hops + 1)


def parse_marker(value):
    """``<origin>;hops=N[;srtp=TOKEN]`` → Forwarded; ValueError if garbled."""
    addr = NameAddr.parse(value, MARKER)
    hops = addr.params.get("hops")
    if hops is None or not hops.isdigit():
        raise ValueError(f"{MARKER} needs hops=N")
    srtp = addr.params.get("srtp")
    if srtp is not None and srtp not in _SRTP_PROFILES:
        raise ValueError(f"{MARKER} srtp={srtp!r} is not savp, savpf or avp")
    return Forwarded(str(addr.uri), int(hops), _SRTP_PROFILES.get(srtp))


def sipfrag_status(body):
    """(status, reason) of a message/sipfrag body's status line (RFC 3420)."""
    line = body.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("SIP/") or not parts[1].isdigit():
        return None
    return int(parts[1]), (parts[2] if len(parts) > 2 else "")


class Delegator:
    """Sends members and REFERs on to foci with room."""

    log = Logger()

    def __init__(self, room, mesh, node, ua, policy):
        self.room = room
        self.mesh = mesh
        self.node = node
        self.ua = ua
        self.policy = policy

    # -- case 1 ------------------------------------------------------------

    def hand_over(self, leg, tried=(), mode=HandOver.WAIT):
        """Move ``leg``'s member to a focus with room (``mode``: what to do
        when none has room)."""
        mesh = self.mesh
        if leg.state is not LegState.CONFIRMED or leg.handing_over:
            return
        target = mesh.pick(exclude=tried, overfill=mode is HandOver.OVERFILL)
        if target is None:
            if mode is HandOver.WAIT:
                mesh.wait_for_room(leg, WAIT_FOR_ROOM)
            return
        dialog = leg.dialog
        replaces = f"{dialog.call_id};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"
        # To: who the member is, so the taker need not wait for our state
        # to reach it (the member's AOR differs from its Contact).
        refer_to = leg.reachable_target().replace(headers=[
            ("Replaces", replaces), ("To", str(NameAddr(URI.parse(leg.user_entity))))])
        self.log.info("{conf}: handing {member} over to {target}", conf=leg.conference.name,
                      member=leg.user_entity, target=target, event="handover")
        leg.handing_over = target

        def done(status, reason):
            mesh.release(target)
            leg.handing_over = None
            if 200 <= status < 300:
                self.room.handed_off(leg)       # its place is free again
                self.ua.clock.callLater(self.node.config.handover_grace,
                                        self._end_replaced, leg)
            elif leg.state is LegState.CONFIRMED:
                self.log.info("{conf}: {target} did not take {member}: {status}",
                              conf=leg.conference.name, target=target,
                              member=leg.user_entity, status=status)
                self.hand_over(leg, tuple(tried) + (target,), mode)
        mesh.reserve(target)
        srtp = leg.negotiated.srtp_profile if leg.negotiated is not None else None
        self.refer(target, refer_to, self.room.name_addr, Forwarded(self.node.uri, 1, srtp),
                   done)

    def _end_replaced(self, leg):
        if leg.state is LegState.CONFIRMED:     # the phone kept the old call: end it
            leg.hangup()

    # -- case 2 ------------------------------------------------------------

    def forward(self, target_uri, referred_by, forwarded, report, tried=()):
        """Forward a REFER for the conference (``report`` hears sipfrags);
        ``forwarded``: the marker it goes with (hops counted already)."""
        mesh = self.mesh
        focus_uri = mesh.pick(exclude=tried)
        if focus_uri is None:
            report(486, "Busy Here")
            return
        mesh.reserve(focus_uri)

        def done(status, reason):
            mesh.release(focus_uri)
            if status in TRY_NEXT and len(tried) < MAX_FORWARD_TRIES:
                self.forward(target_uri, referred_by, forwarded, report,
                             tuple(tried) + (focus_uri,))
            else:
                report(status, reason)
        self.log.info("{conf}: forwarding REFER for {target} to {focus} (hops {hops})",
                      conf=self.room.name, target=str(target_uri), focus=focus_uri,
                      hops=forwarded.hops, event="forward")
        self.refer(focus_uri, target_uri, referred_by, forwarded, done, progress=report)

    # -- the REFER both cases send ------------------------------------------

    def refer(self, focus_uri, refer_to, referred_by, forwarded, done, progress=None):
        """REFER ``focus_uri`` to bring ``refer_to`` into the conference (or,
        with ``method=BYE``, to end that member's call there: moderation.py);
        ``done(status, reason)`` hears the final outcome (the referred
        request's final response, or the REFER's own failure)."""
        me = URI.parse(self.node.uri)
        target = URI.parse(focus_uri).replace(user=self.room.name)
        headers = [("Refer-To", str(NameAddr(refer_to))),
                   ("Referred-By", str(referred_by)),
                   (MARKER, forwarded.header())]
        headers += list(self.policy.request_headers)
        request = out_of_dialog_request("REFER", target, me, self.room.uri,
                                        NameAddr(me), headers)
        finished = []

        def finish(status, reason):
            if not finished:
                finished.append(status)
                done(status, reason)

        def on_notify(notify):
            got = sipfrag_status(notify.body or b"")
            if got is None:
                return
            status, reason = got
            if status >= 200:
                finish(status, reason)
            elif progress is not None and status > 100:
                progress(status, reason)

        def on_result(status):
            if status >= 300:
                finish(status, "REFER refused")

        def on_end(reason):
            finish(408, f"Request Timeout ({reason})")

        Subscriber(self.ua, self.policy, request, on_notify, on_result, on_end,
                   between_foci=True).start()
