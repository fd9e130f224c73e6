"""What the management API sees of the rooms, and the one thing it changes.

The read model between the rooms and ``web/api.py``: plain dicts and lists
(JSON-ready), built from the replicated state so that every focus shows
the same conference; and mute, which is the API's only way to act on a
member.  The HTTP side knows nothing else of the focus.
"""

import time

from ..sip.errors import SIPError
from ..sip.uri import URI

__all__ = ["Views"]


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


def _rtp(stream):
    """What the member's RTP stream here took and dropped (media/engine.py),
    so a hijack attempt (an injector on its port) shows, and its codec as
    SDP names it; None elsewhere."""
    if stream is None:
        return None
    source = stream.latched
    return {"received": stream.received,
            "dropped": {reason.value: n for reason, n in stream.dropped.items()},
            "source": f"{source[0]}:{source[1]}" if source else None,
            "latch": stream.latch.value,
            "codec": stream.coder.codec.rtpmap(),
            "recovered": stream.receiver.recovered,
            "srtp": stream.srtp.suite if stream.srtp is not None else None}


class Views:
    """The conferences of this focus, as the API shows them."""

    def __init__(self, rooms):
        self.rooms = rooms

    def summaries(self):
        """One line per conference: name, uri, member endpoints."""
        return [{"name": room.name, "uri": room.conference.uri,
                 "members": sum(len(u.endpoints) for u in room.conference.users.values())}
                for room in self.rooms]

    def conference(self, name):
        """One conference, the same on every focus: every member endpoint
        with the focus holding it, and every live focus (from the
        replicated state, sorted so that views compare equal); None if
        there is no such conference here.  Only ``rtp`` is this focus's
        own: its members' RTP counts (None for the members of others)."""
        room = self.rooms.get(name)
        if room is None:
            return None
        replica = room.mesh.replica
        streams = room.services.audio.engine.streams
        ours = {leg.endpoint_entity: streams[leg][1] for leg in room.legs
                if leg.is_ours and leg in streams}
        held = {}
        members = []
        for endpoint, (holder, record) in sorted(replica.members().items(),
                                                  key=lambda kv: (kv[1][1].user, kv[0])):
            held[holder] = held.get(holder, 0) + 1
            members.append({"uri": record.user, "endpoint": endpoint, "focus": holder,
                            "status": record.status, "joined": _iso(record.when),
                            "media": record.media, "codec": record.codec,
                            "rtp": _rtp(ours.get(endpoint))})
        foci = [{"uri": f.uri, "role": str(f.role), "capacity": f.capacity,
                 "members": held.get(f.uri, 0), "state": str(f.state), "links": list(f.links),
                 "epoch": f.epoch}
                for f in replica.live_foci()]
        return {"name": room.name, "uri": room.conference.uri, "foci": foci,
                "members": members, "cascades": room.cascades.up(),
                "subscriptions": room.subscriber_count()}

    def set_muted(self, name, member, muted):
        """Mute or unmute ``member`` (a URI, as text) of conference ``name``:
        (HTTP status, JSON body).  404 for no such conference or member,
        400 for a member that is no SIP URI, 409 naming the focus that
        holds a member of another focus."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        try:
            uri = URI.parse(member)
        except SIPError:
            return 400, {"error": f"not a SIP URI: {member}"}
        legs = [leg for leg in room.legs_of(uri) if not leg.handed_off]
        if not legs:
            holder = room.holder_of(member)
            if holder:
                return 409, {"error": "held by another focus", "focus": holder}
            return 404, {"error": "no such member"}
        for leg in legs:
            room.set_muted(leg, muted)
        return 200, {"uri": member, "muted": muted}
