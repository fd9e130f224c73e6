"""The API's guard: the site root, which checks every request, in one
order, before any resource sees it (issue 14 point 6, issue 15 point 5).

Every response, refused or not, says ``X-Content-Type-Options: nosniff``
and ``Cache-Control: no-store``.  Then, first refusal wins:

1. **Host** (DNS rebinding).  A page of ``evil.example`` whose name the
   attacker re-points at 127.0.0.1 reaches the API as "same origin", so
   Origin alone cannot tell; the ``Host`` it sends still says
   ``evil.example``.  The Host, with or without a port (the port is not
   compared: rebinding changes names, and forwarded ports keep working), must
   name the address the connection came in on (``request.getHost()``:
   ``127.0.0.1``, ``[::1]``, an IPv4-mapped address as IPv4 too),
   ``localhost`` when that address is loopback or the listener a unix
   socket, or one of the site's extra ``names``.  Otherwise **421
   Misdirected Request** (RFC 9110 §15.5.20: this server will not answer
   for that authority), not 403: nothing is forbidden to the client, it
   reached the wrong name, and 421 keeps it apart from the Origin check's
   403 in logs and tests.  A Host that is not one (repeated, malformed) or
   missing from an HTTP/1.1 request is 400 (RFC 9112 §3.2); missing from
   HTTP/1.0 it is 421 (no name to check).
2. **Origin** (cross-site pages).  A request carrying ``Origin`` (browsers
   send it on every POST and cross-origin fetch) is refused **403** unless
   that is the API's own origin: ``http`` (``https`` on a TLS listener)
   ``://`` the request's Host, default ports filled in.  No Origin (curl,
   scripts) passes.
3. **Token** (``[http] token_file``): 401, as api.py describes; except
   for the live page's own files (``public``: GET or HEAD of ``/``,
   ``/page.js``, ``/page.css``, web/page.py): a browser cannot put a
   header on a navigation, the files hold no data, and every API call the
   page then makes carries the token like any other client's.  Host and
   Origin are checked for them too.
4. **Content-Type** of every request whose method is not safe (all but
   GET, HEAD, OPTIONS, TRACE; the API's are POSTs: the moderation actions, leave):
   **415** unless ``application/json`` (parameters allowed).  Browsers send
   ``text/plain`` and form bodies cross-site without a CORS preflight; a JSON
   type needs one, which the API never grants.  The body is not read.
5. Only then the path and the method: 404, 405, the resource.

Host and Origin come before the token, so a foreign page is refused the
same whether or not it carries the token and before the token is compared;
the Content-Type after it, so a client without the token learns nothing
but 401.  Refusals are logged once per client address per 10 s
(logbudget.py), not by the access log (api.py's site leaves out REFUSED
codes).
"""

import hmac
import ipaddress
import json
import re
import time
from typing import NamedTuple

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web import resource

from ..logbudget import LogBudget

__all__ = ["REFUSED", "Guard", "json_body"]

REFUSAL_LOG_INTERVAL = 10.0     # s: one refusal line per client address
#: The status codes of the guard's refusals.
REFUSED = frozenset({400, 401, 403, 415, 421})
#: Methods that change nothing (RFC 9110 §9.2.1): no Content-Type asked.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_ORIGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#@]+)")


def json_body(request, value):
    """The body of a JSON response, its type set (Guard.render sets the rest)."""
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value, indent=1).encode() + b"\n"


class Refusal(NamedTuple):
    code: int
    error: str                  # the JSON body's "error"
    why: str                    # the log line's reason
    headers: tuple = ()         # (name, value) pairs to add


def _shown(value):
    """A header value as a log line may show it: quoted, at most 60 characters."""
    return repr(value.decode("latin-1")[:60])


def _host(text):
    """An IP address or a lowercase name, or None if ``text`` is neither."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return text.lower() if _NAME.fullmatch(text) else None


def split_authority(value):
    """``(host, port)`` of a Host value (bytes) or an origin's authority:
    host an IP address or a lowercase name, port an int or None; None if
    it is neither ``name[:port]``, ``IPv4[:port]`` nor ``[IPv6][:port]``."""
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        literal, close, port = text[1:].partition("]")
        try:
            host = ipaddress.IPv6Address(literal) if close else None
        except ValueError:
            host = None
        if port and not port.startswith(":"):
            return None
        port = port[1:]
    else:
        name, _, port = text.partition(":")
        host = _host(name)
        if isinstance(host, ipaddress.IPv6Address):
            return None                 # an IPv6 literal needs its brackets
    if host is None or (port and not (_PORT.fullmatch(port) and 0 < int(port) < 65536)):
        return None
    return host, int(port) if port else None


def own_hosts(address):
    """The Host values a connection to ``address`` (its local end) may name."""
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return {"localhost"}            # a unix socket: only this machine reaches it
    ip = ipaddress.ip_address(address.host.partition("%")[0])    # fe80::1%eth0
    hosts = {ip}
    if ip.version == 6 and ip.ipv4_mapped:
        hosts.add(ip.ipv4_mapped)       # an IPv4 client of a dual-stack socket
    if any(h.is_loopback for h in hosts):
        hosts.add("localhost")
    return hosts


def _target(request, names):
    """(host, port) of the request's Host if it names this API, else a Refusal."""
    values = request.requestHeaders.getRawHeaders(b"host") or []
    if not values:
        if request.clientproto == b"HTTP/1.0":
            return Refusal(421, "misdirected request", "no Host header")
        return Refusal(400, "bad Host header", "no Host header")
    if len(values) > 1:
        return Refusal(400, "bad Host header", "more than one Host header")
    target = split_authority(values[0])
    if target is None:
        return Refusal(400, "bad Host header", f"Host {_shown(values[0])} is not a host")
    if target[0] not in own_hosts(request.getHost()) and target[0] not in names:
        return Refusal(421, "misdirected request", f"Host {_shown(values[0])} is not this API")
    return target


def _origin(request, target):
    """A Refusal if the request carries an Origin other than the API's own."""
    values = request.requestHeaders.getRawHeaders(b"origin") or []
    if not values:
        return None
    refused = Refusal(403, "forbidden origin", f"Origin {_shown(values[-1])}")
    if len(values) > 1:
        return refused._replace(why="more than one Origin header")
    match = _ORIGIN.fullmatch(values[0].decode("latin-1").strip())
    origin = split_authority(match[2].encode("latin-1")) if match else None
    if origin is None:
        return refused
    scheme = "https" if request.isSecure() else "http"
    theirs = match[1].lower(), origin[0], origin[1] or _PORTS.get(match[1].lower())
    if theirs != (scheme, target[0], target[1] or _PORTS[scheme]):
        return refused
    return None


def _content_type(request):
    """A Refusal if the request may change something and is not JSON."""
    if request.method in SAFE_METHODS:
        return None
    values = request.requestHeaders.getRawHeaders(b"content-type") or []
    media = values[0].partition(b";")[0].strip().lower() if len(values) == 1 else None
    if media == b"application/json":
        return None
    why = (f"Content-Type {_shown(values[0])}" if len(values) == 1 else
           f"{len(values) or 'no'} Content-Type headers")
    return Refusal(415, "unsupported media type: send Content-Type: application/json",
                   why, ((b"accept", b"application/json"),))      # RFC 9110 §15.5.16


def allowed_names(names):
    """The extra Host names of ``api_site(names=...)``, normalised;
    ValueError for one that is no host name or IP address."""
    out = set()
    for name in names:
        host = _host(name.strip("[] ")) if isinstance(name, str) else None     # [::1] or ::1
        if host is None:
            raise ValueError(f"not a host name or IP address: {name!r}")
        out.add(host)
    return frozenset(out)


class Guard(resource.Resource):
    """The site root over ``api``: the checks of the module docstring.
    ``token``: the API token, or None.  ``names``: the extra Host names
    (see allowed_names); None checks neither Host, Origin nor Content-Type,
    only the token (the bare guard of the token's unit tests: api_site
    always passes names).  ``public``: the paths (postpath lists) a GET or
    HEAD gets without the token (the page's files, page.py)."""

    isLeaf = True                   # finds the resource itself, once allowed
    log = Logger()

    def __init__(self, api, token=None, now=time.monotonic, names=None, public=()):
        super().__init__()
        self.api = api
        #: paths (postpath lists as tuples) a safe method gets without the token
        self.public = frozenset(tuple(p) for p in public)
        self.token = token.encode("ascii") if token else None
        self.names = None if names is None else allowed_names(names)
        #: refusals are logged once per client address per 10 s (logbudget.py)
        self.refusals = LogBudget(now, interval=REFUSAL_LOG_INTERVAL, max_sources=256,
                                  others="other addresses")

    def render(self, request):
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-store")
        refusal = self.refusal(request)
        if refusal is not None:
            return self._refuse(request, refusal)
        return resource.getChildForRequest(self.api, request).render(request)

    def refusal(self, request):
        """The Refusal of ``request``, or None: the checks, in their order."""
        if self.names is not None:
            target = _target(request, self.names)
            if isinstance(target, Refusal):
                return target
            refused = _origin(request, target)
            if refused is not None:
                return refused
        if self.token is not None and not self._public(request):
            why = self._unauthorized(request)
            if why:
                challenge = b'Bearer realm="mfocus"'
                if why == "wrong token":    # RFC 6750 §3.1: a token was sent, and is not valid
                    challenge += b', error="invalid_token"'
                return Refusal(401, "unauthorized", why, ((b"www-authenticate", challenge),))
        if self.names is not None:
            return _content_type(request)
        return None

    def _public(self, request):
        """True for a GET or HEAD of one of the page's files (``public``)."""
        return (request.method in (b"GET", b"HEAD")
                and tuple(request.postpath) in self.public)

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

    def _refuse(self, request, refusal):
        request.setResponseCode(refusal.code)
        for name, value in refusal.headers:
            request.setHeader(name, value)
        address = request.getClientAddress()
        client = address.host if isinstance(address, (IPv4Address, IPv6Address)) else str(address)
        admitted = self.refusals.admit(client)
        if admitted is not None:
            self.log.info("API: refused {method} from {client}: {why} ({code}; more from it "
                          "within {interval:g} s are not logged)",
                          method=request.method.decode("latin-1")[:16], client=admitted[0],
                          why=refusal.why, code=refusal.code, interval=REFUSAL_LOG_INTERVAL)
        return json_body(request, {"error": refusal.error})
