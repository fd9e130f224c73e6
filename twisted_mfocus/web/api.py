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
file the API listens on loopback only (listen.py).  Every response says
``X-Content-Type-Options: nosniff``.
"""

import hmac
import json
import time
from urllib.parse import unquote

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web import resource, server

from ..config import ConfigError

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


class _RefusalLog:
    """One log line per client address per ``interval`` seconds, for at most
    ``size`` addresses at a time; beyond them one line for all the others."""

    OTHERS = "other addresses"
    log = Logger()

    def __init__(self, now, interval=10.0, size=256):
        self.now, self.interval, self.size = now, interval, size
        self.last = {}              # address -> when it was last logged, oldest first

    def refused(self, address, method, why):
        """Log a refused request unless ``address`` was logged lately;
        True if logged."""
        t, last = self.now(), self.last
        while last:                 # forget the addresses logged long enough ago
            oldest = next(iter(last))
            if t - last[oldest] < self.interval:
                break
            del last[oldest]
        if address not in last and len(last) >= self.size:
            address = self.OTHERS
        if address in last:
            return False
        last[address] = t
        self.log.info("API: refused {method} from {client}: {why} (401; more from it "
                      "within {interval:g} s are not logged)", method=method,
                      client=address, why=why, interval=self.interval)
        return True


class _Guard(resource.Resource):
    """The site root: sets the headers of every response and, with a
    token, refuses every request without it before finding its resource."""

    isLeaf = True                   # finds the resource itself, once allowed

    def __init__(self, api, token=None, now=time.monotonic):
        super().__init__()
        self.api = api
        self.token = token.encode("ascii") if token else None
        self.refusals = _RefusalLog(now)

    def render(self, request):
        request.setHeader(b"x-content-type-options", b"nosniff")
        if self.token is not None:
            why = self._unauthorized(request)
            if why:
                return self._refuse(request, why)
        return resource.getChildForRequest(self.api, request).render(request)

    def _unauthorized(self, request):
        """Why ``request`` may not use the API, or None if it may."""
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if not values:
            return "no Authorization header"
        if len(values) > 1:
            return "more than one Authorization header"
        scheme, _, credentials = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return "not a Bearer token"
        if not hmac.compare_digest(credentials.strip(), self.token):
            return "wrong token"
        return None

    def _refuse(self, request, why):
        challenge = b'Bearer realm="mfocus"'
        if why == "wrong token":        # RFC 6750 §3.1: a token was sent, and is not valid
            challenge += b', error="invalid_token"'
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", challenge)
        address = request.getClientAddress()
        client = address.host if isinstance(address, (IPv4Address, IPv6Address)) else str(address)
        self.refusals.refused(client, request.method.decode("latin-1")[:16], why)
        return _JSON._json(request, {"error": "unauthorized"})


def api_root(views, leave=None, token=None, now=time.monotonic):
    """The site root over ``views`` (focus/views.py):
    ``/api/v1/conferences[/NAME]``, and ``/api/v1/leave`` when ``leave`` (a
    callable that makes the process leave) is given; with ``token`` (see
    read_token) only for requests that carry it.  ``now``: the clock of the
    refusal log's bound."""
    v1 = {b"conferences": _Conferences(views)}
    if leave is not None:
        v1[b"leave"] = _Leave(leave)
    return _Guard(_Node({b"api": _Node({b"v1": _Node(v1)})}), token, now)


class _Site(server.Site):
    """twisted.web's site, whose access log leaves out the refused requests
    (401): the guard logs those, bounded."""

    def log(self, request):
        if request.code != 401:
            super().log(request)


def api_site(views, leave=None, token=None):
    """The ``server.Site`` of the API (see api_root)."""
    return _Site(api_root(views, leave, token))
