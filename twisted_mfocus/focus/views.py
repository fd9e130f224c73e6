"""What the management API sees of the rooms, and its way to act on them.

The read model between the rooms and ``web/api.py``: plain dicts and lists
(JSON-ready), built from the replicated state so that every focus shows
the same conference; and ``moderation`` (moderation.py: mute, kick, lock,
end), the API's only way to act on a conference.  The HTTP side knows
nothing else of the focus.
"""

import time

from .moderation import Moderation

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
        #: what the operator does to the conferences (moderation.py)
        self.moderation = Moderation(rooms)

    def summaries(self):
        """One line per conference: name, uri, member endpoints."""
        return [{"name": room.name, "uri": room.conference.uri,
                 "members": sum(len(u.endpoints) for u in room.conference.users.values())}
                for room in self.rooms]

    def gauges(self):
        """(name, member endpoints, live foci, links up) per conference: the
        figures of metrics.py, counted as ``summaries`` and ``conference``
        count them (links: the other foci this one subscribes to that
        answer, as its record's ``links`` lists them) without building
        every member's view."""
        for room in self.rooms:
            mesh = room.mesh
            yield (room.name, sum(len(u.endpoints) for u in room.conference.users.values()),
                   len(mesh.replica.live_foci()), sum(1 for link in mesh.links.values() if link.up))

    def conference(self, name):
        """One conference, the same on every focus: every member endpoint
        with the focus holding it, and every live focus (from the
        replicated state, sorted so that views compare equal); None if
        there is no such conference here.  Only ``rtp`` and ``muted``
        are this focus's own: its members' RTP counts, whether the
        operator or ``*6`` muted them and ``level``, how loud each was
        lately (0..1, mixer.py) (None for the members of others);
        and ``locked``: whether this focus admits new callers."""
        room = self.rooms.get(name)
        if room is None:
            return None
        replica = room.mesh.replica
        engine = room.services.audio.engine
        here = [leg for leg in room.legs if leg.is_ours]
        ours = {leg.endpoint_entity: engine.streams[leg][1] for leg in here
                if leg in engine.streams}
        muted = {leg.endpoint_entity: leg.muted for leg in here}
        level = {leg.endpoint_entity: engine.level(leg) for leg in here}
        held = {}
        members = []
        for endpoint, (holder, record) in sorted(replica.members().items(),
                                                  key=lambda kv: (kv[1][1].user, kv[0])):
            held[holder] = held.get(holder, 0) + 1
            members.append({"uri": record.user, "endpoint": endpoint, "focus": holder,
                            "status": record.status, "joined": _iso(record.when),
                            "media": record.media, "codec": record.codec,
                            "muted": muted.get(endpoint),
                            "rtp": _rtp(ours.get(endpoint)),
                            "level": level.get(endpoint)})
        foci = [{"uri": f.uri, "role": str(f.role), "capacity": f.capacity,
                 "members": held.get(f.uri, 0), "state": str(f.state), "links": list(f.links),
                 "epoch": f.epoch}
                for f in replica.live_foci()]
        return {"name": room.name, "uri": room.conference.uri, "locked": room.policy.locked,
                "foci": foci, "members": members, "cascades": room.cascades.up(),
                "subscriptions": room.subscriber_count(),
                # this focus's recording of the room (recordings.py): its file, or None
                "recording": room.services.audio.recordings.path_of(room)}
