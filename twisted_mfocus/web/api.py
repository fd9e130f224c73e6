"""The JSON management API (``--http``), on twisted.web.

``GET /api/v1/conferences`` lists conferences (name, uri, member count);
``GET /api/v1/conferences/NAME`` shows one:
``{"name", "uri", "foci": [{"uri", "role", "capacity", "members", "state",
"links"}],
"members": [{"uri", "focus", "status", "joined"}], "subscriptions"}``
(each member also names its ``endpoint`` and ``media`` status; each focus
its ``epoch``; ``cascades``: the foci this one has a media leg with).  The
foci are the live ones: a focus that left or failed is not listed.
``POST /api/v1/conferences/NAME/members/URI/mute`` (and ``/unmute``)
keeps a member's voice out of the mix (URI percent-encoded; a member held
by another focus: 409 naming that focus): ``{"uri", "muted"}``.
``POST /api/v1/leave`` makes this focus leave (as SIGTERM does: its members
are handed to other foci, then the process exits): 202.
Other tools depend on these field names: add fields, never rename them.
404 for anything unknown, 405 for methods other than GET (POST for leave).
"""

import json
import time
from urllib.parse import unquote

from twisted.web import resource

from ..sip.errors import SIPError
from ..sip.uri import URI

__all__ = ["api_root", "conference_view"]


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


def conference_view(focus, conference):
    """One conference as the API shows it, the same on every focus: every
    member endpoint with the focus holding it, and every focus (from the
    replicated state, sorted so that views compare equal)."""
    replica = focus.mesh_of(conference).replica
    held = {}
    members = []
    for endpoint, (holder, record) in sorted(replica.members().items(),
                                              key=lambda kv: (kv[1][1].user, kv[0])):
        held[holder] = held.get(holder, 0) + 1
        members.append({"uri": record.user, "endpoint": endpoint, "focus": holder,
                        "status": record.status, "joined": _iso(record.when),
                        "media": record.media})
    foci = [{"uri": f.uri, "role": f.role, "capacity": f.capacity,
             "members": held.get(f.uri, 0), "state": f.state, "links": list(f.links),
             "epoch": f.epoch}
            for f in replica.live_foci()]
    cascades = sorted(peer for (conf, peer), leg in focus.cascades.legs.items()
                      if conf is conference and leg.state == "confirmed")
    return {"name": conference.name, "uri": conference.uri, "foci": foci,
            "members": members, "cascades": cascades,
            "subscriptions": len(focus.notifier.subscriptions(resource=conference))}


class _JSON(resource.Resource):
    allowed = (b"GET", b"HEAD")

    def render(self, request):
        if request.method not in self.allowed:
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(self.allowed))
            return self._json(request, {"error": "method not allowed"})
        return super().render(request)

    @staticmethod
    def _json(request, value):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(value, indent=1).encode() + b"\n"

    def _not_found(self, request, what):
        request.setResponseCode(404)
        return self._json(request, {"error": f"no such {what}"})


class _Conference(_JSON):
    isLeaf = True
    allowed = (b"GET", b"HEAD", b"POST")

    def __init__(self, focus, name):
        super().__init__()
        self.focus, self.name = focus, name

    def render_POST(self, request):
        """``members/URI/mute`` or ``members/URI/unmute``."""
        path = request.postpath
        if len(path) != 3 or path[0] != b"members" or path[2] not in (b"mute", b"unmute"):
            return self._not_found(request, "resource")
        conference = self.focus.conferences.get(self.name)
        if conference is None:
            return self._not_found(request, "conference")
        member = unquote(path[1].decode("utf-8", "replace"))
        try:
            uri = URI.parse(member)
        except SIPError:
            request.setResponseCode(400)
            return self._json(request, {"error": f"not a SIP URI: {member}"})
        legs = [leg for leg in self.focus.legs_of(conference, uri) if not leg.handed_off]
        if not legs:
            holder = self.focus.holder_of(conference, member)
            request.setResponseCode(409 if holder else 404)
            return self._json(request, {"error": "held by another focus", "focus": holder}
                              if holder else {"error": "no such member"})
        muted = path[2] == b"mute"
        for leg in legs:
            self.focus.audio.set_muted(leg, muted)
        return self._json(request, {"uri": member, "muted": muted})

    def render_GET(self, request):
        if request.postpath and request.postpath != [b""]:
            return self._not_found(request, "resource")
        conference = self.focus.conferences.get(self.name)
        if conference is None:
            return self._not_found(request, "conference")
        return self._json(request, conference_view(self.focus, conference))


class _Conferences(_JSON):
    def __init__(self, focus):
        super().__init__()
        self.focus = focus

    def getChild(self, path, request):
        if not path:
            return self
        return _Conference(self.focus, path.decode("utf-8", "replace"))

    def render_GET(self, request):
        return self._json(request, [
            {"name": c.name, "uri": c.uri,
             "members": sum(len(u.endpoints) for u in c.users.values())}
            for c in self.focus.conferences.values()])


class _Leave(_JSON):
    isLeaf = True
    allowed = (b"POST",)

    def __init__(self, leave):
        super().__init__()
        self.leave = leave

    def render_POST(self, request):
        if request.postpath and request.postpath != [b""]:
            return self._not_found(request, "resource")
        request.setResponseCode(202)
        self.leave()
        return self._json(request, {"leaving": True})


class _NotFound(_JSON):
    isLeaf = True

    def render_GET(self, request):
        return self._not_found(request, "resource")


class _Node(resource.Resource):
    """A path step: only the named children exist."""

    def __init__(self, children):
        super().__init__()
        for name, child in children.items():
            self.putChild(name, child)

    def getChild(self, path, request):
        return _NotFound()

    def render(self, request):
        return _NotFound().render(request)


def api_root(focus, leave=None):
    """The site root: ``/api/v1/conferences[/NAME]``, and ``/api/v1/leave``
    when ``leave`` (a callable that makes the process leave) is given."""
    v1 = {b"conferences": _Conferences(focus)}
    if leave is not None:
        v1[b"leave"] = _Leave(leave)
    return _Node({b"api": _Node({b"v1": _Node(v1)})})
