"""Where messages come from and go to: the routing rules of RFC 3261 §18
and RFC 3581, and the server-selection logic of RFC 3263, as pure functions.

Rules of this module:

- Sans-IO: no reactor, no sockets, no DNS.  The transport layer
  (``twisted_mfocus/transport/``) does the I/O and asks these functions
  what to do; randomness (RFC 2782 weights) comes from an injected
  ``random.Random``.
- Addresses are ``Peer`` values: upper-case transport, IP literal host
  (IPv6 without brackets).  URI and Via hosts keep their brackets
  (RFC 5118), so every crossing between the two goes through
  ``strip_brackets``.
- Only the top Via is ever rewritten; the other Via values and every
  other header keep the text they came with.
"""

import functools
import ipaddress
import random as _random
from typing import NamedTuple, Optional

from .address import DEFAULT_PORTS, Peer
from .values import Via

__all__ = [
    "stamp_received", "response_destination", "next_hop", "rewrite_top_via",
    "strip_brackets", "is_ip_literal", "same_address", "default_port",
    "Target", "server_target", "srv_queries", "sort_srv", "SRV",
    "MAX_UDP_REQUEST",
]

#: RFC 3261 §18.1.1: a request larger than this (1300 bytes, or within 200
#: bytes of a 1500-byte path MTU) goes over a congestion-controlled transport.
MAX_UDP_REQUEST = 1300


# -- addresses -------------------------------------------------------------------

def strip_brackets(host):
    """``[::1]`` → ``::1`` (RFC 5118 §4.1); other hosts unchanged."""
    if host and host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


@functools.lru_cache(maxsize=4096)     # hosts repeat: every message sent asks
def _ip(host):
    """The address ``host`` is (ipaddress objects are immutable), or None."""
    try:
        return ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return None


def is_ip_literal(host):
    """True for an IPv4 address or an IPv6 reference (with or without [])."""
    return _ip(host) is not None


def same_address(a, b):
    """Compare two hosts as addresses: ``[0:0::1]`` equals ``::1``
    (RFC 5118 §4.4); names compare case-insensitively."""
    ia, ib = _ip(a), _ip(b)
    if ia is not None and ib is not None:
        return ia == ib
    return strip_brackets(a).lower() == strip_brackets(b).lower()


def default_port(transport):
    """RFC 3261 §19.1.2: 5061 for TLS, 5060 otherwise."""
    return DEFAULT_PORTS.get(transport.upper(), 5060)


# -- the top Via -----------------------------------------------------------------

def _replace_top_via(message, via):
    """Put ``via`` in place of the top Via value; the others are untouched.

    ``pop_first_value`` leaves the rest of a comma-joined Via line where it
    was; the new top value goes first, so the Via order is kept.
    """
    headers = message.headers
    rest = message.vias[1:]
    headers.pop_first_value("via")
    headers.add("Via", str(via), first=True)
    headers.seed_typed("via", Via.parse, [via] + rest)     # no re-parse of what we hold


def stamp_received(request, source):
    """RFC 3261 §18.2.1 and RFC 3581 §4 on a request that came from ``source``.

    - ``received=<source ip>`` is added when the sent-by host is not the
      source address; one already present is always replaced by the real
      source (it was written by someone else, or is stale).
    - A bare ``;rport`` is filled with the source port, and then
      ``received`` is set even if the host matches (RFC 3581 §4).

    The request must have passed ``validate()`` (its top Via parses).
    Returns True when the top Via was rewritten.
    """
    via = request.top_via
    params = via.params
    rport = "rport" in params and params["rport"] is None
    if "received" in params:
        if not rport and params["received"] == source.host:
            return False        # already the real source
    elif not rport and same_address(via.host, source.host):
        return False
    new = Via(via.transport, via.host, via.port, dict(params))
    # RFC 3261 §25.1: received carries the bare address (IPv6 without []),
    # RFC 5118 §4.5.
    new.params["received"] = source.host
    if rport:
        new.params["rport"] = str(source.port)
    _replace_top_via(request, new)
    return True


def rewrite_top_via(message, transport=None, port=None):
    """Change the sent-protocol transport and/or sent-by port of the top
    Via (RFC 3261 §18.1.1: a request moved from UDP to TCP must say so)."""
    via = message.top_via
    new = Via(transport or via.transport, via.host,
              via.port if port is None else port, dict(via.params))
    _replace_top_via(message, new)


def response_destination(response, source, reuse=True):
    """Where a response to a request from ``source`` goes (RFC 3261 §18.2.2,
    RFC 3581 §4).  Returns a ``Peer``.

    - Reliable transport and ``reuse``: ``source`` itself, i.e. the
      connection the request came on.  With ``reuse=False`` (that
      connection is gone): a new connection to the ``received`` address
      (or the sent-by host) and the sent-by port (default 5060, 5061 for
      TLS).
    - Unreliable with ``maddr``: the maddr host and the sent-by port
      (default 5060).  The host may be a name; the caller resolves it
      (RFC 3263 §5).
    - Unreliable otherwise: ``received`` (or the sent-by host) and the
      ``rport`` value if filled (RFC 3581 §4), else the sent-by port.
    """
    via = response.top_via
    transport = source.transport
    host = strip_brackets(via.received or via.host)
    if source.reliable:
        if reuse:
            return source
        return Peer(transport, host, via.port or default_port(transport))
    maddr = via.maddr
    if maddr:
        return Peer(transport, strip_brackets(maddr), via.port or 5060)
    rport = via.rport
    if rport is not None and rport is not True:
        port = rport
    else:
        port = via.port or default_port(transport)
    return Peer(transport, host, port)


# -- outgoing requests -----------------------------------------------------------

def next_hop(request):
    """The URI to resolve for an outgoing request (RFC 3261 §8.1.2).

    The top Route when it is a loose router (``lr``); otherwise the
    Request-URI: either there is no Route, or the request was already
    formed for a strict router (§12.2.1.1), which put that router in the
    Request-URI.
    """
    routes = request.routes
    if routes and "lr" in routes[0].uri.params:
        return routes[0].uri
    return request.uri


# -- RFC 3263 server selection ---------------------------------------------------

class Target(NamedTuple):
    """What RFC 3263 §4 makes of a URI before any DNS query.

    ``host`` is bare (IPv6 without brackets); ``port`` None when the URI has
    none; ``transport`` None when DNS has to choose it; ``numeric`` True
    for an IP literal (no DNS at all); ``secure`` for a SIPS URI.
    """

    host: str
    port: Optional[int]
    transport: Optional[str]
    secure: bool
    numeric: bool

    def peer(self):
        """The one destination of a target that needs no DNS (numeric)."""
        transport = self.transport or ("TLS" if self.secure else "UDP")
        return Peer(transport, self.host, self.port or default_port(transport))


_TRANSPORTS = {"udp": "UDP", "tcp": "TCP", "tls": "TLS", "sctp": "SCTP"}


def server_target(uri):
    """Apply RFC 3263 §4 to a SIP or SIPS URI.

    §4: the target is ``maddr`` if present, else the host.  §4.1: an explicit
    ``transport=`` wins (a SIPS URI over TCP means TLS, RFC 3261 §26.2.2);
    with no transport, a numeric target or an explicit port means UDP for
    SIP and TLS for SIPS; otherwise the transport is left to DNS (None).
    Raises ValueError for a URI that is not SIP or SIPS.
    """
    if not uri.is_sip:
        raise ValueError(f"cannot route to a {uri.scheme}: URI")
    secure = uri.scheme == "sips"
    host = strip_brackets(uri.params.get("maddr") or uri.host)
    numeric = is_ip_literal(host)
    port = uri.port
    t = uri.transport
    if t:
        transport = _TRANSPORTS.get(t, t.upper())
        if secure or transport == "TLS":
            transport = "TLS"
    elif numeric or port is not None:
        transport = "TLS" if secure else "UDP"
    else:
        transport = None
    if numeric:
        host = str(ipaddress.ip_address(host))
    return Target(host, port, transport, secure, numeric)


_SRV_PREFIX = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}


def srv_queries(target, supported=("UDP", "TCP", "TLS")):
    """The SRV names to query for a target, most preferred first
    (RFC 3263 §4.1 without NAPTR, §4.2).

    Empty when no SRV query applies: a numeric target or an explicit port
    (§4.2: A/AAAA only).  A SIPS target only queries ``_sips._tcp``.
    Returns ``[(name, transport)]``.
    """
    if target.numeric or target.port is not None:
        return []
    host = target.host.rstrip(".")
    if target.transport:
        transports = [target.transport]
    elif target.secure:
        transports = ["TLS"]
    else:
        transports = list(supported)
    return [(_SRV_PREFIX[t] + host, t) for t in transports
            if t in _SRV_PREFIX and t in supported]


class SRV(NamedTuple):
    """One SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


def sort_srv(records, rng=None):
    """Order SRV records as RFC 2782 says a client tries them.

    Lowest priority first; within a priority, a weighted random order
    (zero weights placed first, so they are chosen rarely, not never).
    A single record with target ``.`` means the service is decidedly not
    available: no records.
    """
    rng = rng or _random
    records = [r for r in records if r.target not in (".", "")]
    out = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        group.sort(key=lambda r: r.weight != 0)     # zero weight first
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out
