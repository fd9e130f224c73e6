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
from urllib.parse import unquote

from twisted.web import resource

__all__ = ["api_root"]


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

    def __init__(self, views, name):
        super().__init__()
        self.views, self.name = views, name

    def render_POST(self, request):
        """``members/URI/mute`` or ``members/URI/unmute``."""
        path = request.postpath
        if len(path) != 3 or path[0] != b"members" or path[2] not in (b"mute", b"unmute"):
            return self._not_found(request, "resource")
        member = unquote(path[1].decode("utf-8", "replace"))
        status, body = self.views.set_muted(self.name, member, path[2] == b"mute")
        request.setResponseCode(status)
        return self._json(request, body)

    def render_GET(self, request):
        if request.postpath and request.postpath != [b""]:
            return self._not_found(request, "resource")
        view = self.views.conference(self.name)
        if view is None:
            return self._not_found(request, "conference")
        return self._json(request, view)


class _Conferences(_JSON):
    def __init__(self, views):
        super().__init__()
        self.views = views

    def getChild(self, path, request):
        if not path:
            return self
        return _Conference(self.views, path.decode("utf-8", "replace"))

    def render_GET(self, request):
        return self._json(request, self.views.summaries())


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


def api_root(views, leave=None):
    """The site root over ``views`` (focus/views.py):
    ``/api/v1/conferences[/NAME]``, and ``/api/v1/leave`` when ``leave`` (a
    callable that makes the process leave) is given."""
    v1 = {b"conferences": _Conferences(views)}
    if leave is not None:
        v1[b"leave"] = _Leave(leave)
    return _Node({b"api": _Node({b"v1": _Node(v1)})})
