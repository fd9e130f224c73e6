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

With ``[http] token_file`` every request, whatever its method and path,
must carry ``Authorization: Bearer TOKEN`` (RFC 6750 §2.1); any other is
answered 401 with ``WWW-Authenticate: Bearer realm="mfocus"`` (§3) before
its path is even looked at, and logged (one line per client address per
10 s, instead of the access log's line per request).  Without a token
file the API listens on loopback only (listen.py).  Against browsers
(guard.py, which orders every check): a ``Host`` that is not the API's
address is 421 (DNS rebinding), an ``Origin`` not its own 403, and a POST
not ``Content-Type: application/json`` 415; all before the path.  Every
response says ``X-Content-Type-Options: nosniff`` and
``Cache-Control: no-store``.
"""

import time
from urllib.parse import unquote

from twisted.web import resource, server

from ..config import ConfigError
from .guard import REFUSED, Guard, json_body

__all__ = ["api_root", "api_site", "read_token"]

#: The shortest token accepted (``openssl rand -hex 32`` makes 64 characters).
MIN_TOKEN_LENGTH = 16


class _JSON(resource.Resource):
    allowed = (b"GET", b"HEAD")

    def render(self, request):
        if request.method not in self.allowed:
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(self.allowed))
            return self._json(request, {"error": "method not allowed"})
        return super().render(request)

    _json = staticmethod(json_body)

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


def read_token(path):
    """The API token in the file ``path`` (``[http] token_file``), stripped
    of surrounding whitespace; ConfigError, naming the key, for a file that
    cannot be read or a token that is empty, holds whitespace or other than
    visible ASCII, or is shorter than MIN_TOKEN_LENGTH."""
    key = "http.token_file"
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror or e}")
    if not token:
        raise ConfigError(f"{key}: {path} holds no token")
    if any(c in b" \t\r\n\v\f" for c in token):
        raise ConfigError(f"{key}: the token in {path} contains whitespace (one token, one line)")
    if not all(0x21 <= c <= 0x7e for c in token):
        raise ConfigError(f"{key}: the token in {path} must be visible ASCII "
                          "(e.g. made by openssl rand -hex 32)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{key}: the token in {path} is shorter than "
                          f"{MIN_TOKEN_LENGTH} characters")
    return token.decode("ascii")


def api_root(views, leave=None, token=None, now=time.monotonic, names=None):
    """The site root over ``views`` (focus/views.py):
    ``/api/v1/conferences[/NAME]``, and ``/api/v1/leave`` when ``leave`` (a
    callable that makes the process leave) is given; with ``token`` (see
    read_token) only for requests that carry it.  ``now``: the clock of the
    refusal log's bound.  ``names``: the Host names answered besides the
    listener's address; None (only for unit tests of the token) checks
    neither Host, Origin nor Content-Type (guard.py)."""
    v1 = {b"conferences": _Conferences(views)}
    if leave is not None:
        v1[b"leave"] = _Leave(leave)
    return Guard(_Node({b"api": _Node({b"v1": _Node(v1)})}), token, now, names)


class _Site(server.Site):
    """twisted.web's site, whose access log leaves out the refused requests
    (guard.REFUSED: 400, 401, 403, 415, 421): the guard logs those, bounded."""

    def log(self, request):
        if request.code not in REFUSED:
            super().log(request)


def api_site(views, leave=None, token=None, names=()):
    """The ``server.Site`` of the API (see api_root), every check on:
    ``names`` are the extra Host names it answers to (e.g. the DNS name
    of a host whose API is reached with the token), besides the address a
    connection comes in on and, on loopback, ``localhost``."""
    return _Site(api_root(views, leave, token, names=tuple(names or ())))
