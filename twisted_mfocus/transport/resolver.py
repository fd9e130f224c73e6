"""Locating SIP servers (RFC 3263 §4) with ``twisted.names``.

Rules of this module:

- The decisions (which transport, which SRV names, the RFC 2782 order) are
  the pure functions of ``twisted_mfocus.sip.routing``; this module only
  asks DNS and caches the answers.
- IP literals never touch DNS (RFC 3263 §4.2).
- The cache honours each answer's TTL, keeps failures (NXDOMAIN, no data)
  for ``negative_ttl``, holds at most ``max_entries`` names (least recently
  used go first), and reads time from the injected ``clock``.
- NAPTR (RFC 3263 §4.1) is not queried: SRV for the transports we support,
  then A/AAAA, which §4.1 allows when no NAPTR is used.
"""

import socket
from collections import OrderedDict

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError

from ..sip.address import Peer
from ..sip.routing import SRV, default_port, server_target, sort_srv, srv_queries
from .errors import TransportError

__all__ = ["Resolver", "LocateError"]


class LocateError(TransportError):
    """No server could be found for a URI (RFC 3263 §4.3: the request
    fails as if the transport had failed)."""


class Resolver:
    """``locate(uri) -> Deferred[list[Peer]]``: the servers to try, in order.

    ``dns_resolver`` is an ``IResolver`` (e.g.
    ``twisted.names.client.Resolver(servers=[(host, port)])``); by default
    the system one (``client.getResolver()``).  ``clock`` provides
    ``seconds()`` (the reactor, or ``task.Clock`` in tests).
    """

    log = Logger()

    def __init__(self, clock, dns_resolver=None, max_entries=1024,
                 negative_ttl=30.0, max_ttl=86400.0, timeout=(1, 3, 5),
                 supported=("UDP", "TCP", "TLS"), rng=None):
        self.clock = clock
        self._dns = dns_resolver
        self.max_entries = max_entries
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.timeout = timeout
        self.supported = tuple(supported)
        self.rng = rng
        self._cache = OrderedDict()     # (kind, name) -> (expires, value)
        self.queries = 0                # DNS queries sent (for tests and stats)

    @property
    def dns(self):
        if self._dns is None:
            from twisted.names import client
            self._dns = client.getResolver()
        return self._dns

    # -- the RFC 3263 procedure -----------------------------------------

    def locate(self, uri):
        """RFC 3263 §4: the ``Peer`` list for a SIP/SIPS URI, best first.

        Fails with ``LocateError`` when nothing is found.
        """
        try:
            target = server_target(uri)
        except ValueError as e:
            return defer.fail(LocateError(str(e)))
        if target.numeric:
            return defer.succeed([target.peer()])
        return defer.ensureDeferred(self._locate(uri, target))

    async def _locate(self, uri, target):
        queries = srv_queries(target, self.supported)
        peers = []
        if queries:
            results = await defer.gatherResults(
                [defer.ensureDeferred(self._srv(name)) for name, _ in queries])
            for (_, transport), records in zip(queries, results):
                for rec in sort_srv(records, self.rng):
                    for host in await self.addresses(rec.target):
                        peers.append(Peer(transport, host, rec.port))
            if peers:
                return peers
        # §4.2: no SRV records (or an explicit port): A/AAAA of the host.
        transport = target.transport or ("TLS" if target.secure else "UDP")
        port = target.port or default_port(transport)
        for host in await self.addresses(target.host):
            peers.append(Peer(transport, host, port))
        if not peers:
            raise LocateError(f"no server found for {uri}")
        return peers

    def addresses(self, name):
        """Deferred list of IP literals for ``name`` (A, then AAAA)."""
        return defer.ensureDeferred(self._addresses(name))

    async def _addresses(self, name):
        name = name.rstrip(".").lower()
        v4, v6 = await defer.gatherResults([
            defer.ensureDeferred(self._query("A", name)),
            defer.ensureDeferred(self._query("AAAA", name))])
        return v4 + v6

    async def _srv(self, name):
        return await self._query("SRV", name.lower())

    # -- cache ------------------------------------------------------------

    def _get(self, key):
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock.seconds():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return value

    def _put(self, key, value, ttl):
        if ttl <= 0:
            return
        self._cache[key] = (self.clock.seconds() + min(ttl, self.max_ttl), value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _query(self, kind, name):
        key = (kind, name)
        cached = self._get(key)
        if cached is not None:
            return cached
        lookup = {"A": self.dns.lookupAddress, "AAAA": self.dns.lookupIPV6Address,
                  "SRV": self.dns.lookupService}[kind]
        self.queries += 1
        try:
            answers, _, _ = await lookup(name, timeout=self.timeout)
        except (DNSNameError, DomainError):
            self._put(key, [], self.negative_ttl)     # no such name / no data
            return []
        except Exception as e:
            # A timeout or a server failure is not cached: try again next time.
            self.log.info("DNS {kind} {name} failed: {error}", kind=kind, name=name,
                          error=e)
            return []
        values, ttl = _extract(kind, answers)
        self._put(key, values, ttl if values else self.negative_ttl)
        return values


_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "SRV": dns.SRV}


def _extract(kind, answers):
    """(values, smallest TTL) from the answer section of one query."""
    want = _TYPES[kind]
    values = []
    ttl = None
    for rr in answers:
        if rr.type != want:
            continue       # CNAMEs followed by the server come along
        p = rr.payload
        if kind == "A":
            values.append(socket.inet_ntop(socket.AF_INET, p.address))
        elif kind == "AAAA":
            values.append(socket.inet_ntop(socket.AF_INET6, p.address))
        else:
            values.append(SRV(p.priority, p.weight, p.port,
                              p.target.name.decode("ascii", "replace").rstrip(".") or "."))
        ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
    return values, ttl or 0
