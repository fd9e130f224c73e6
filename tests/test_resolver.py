"""RFC 3263 server location against a DNS server of the test's own on 127.0.0.1."""

import random

from twisted.internet import defer, reactor, task
from twisted.names import authority, client, common, dns, server
from twisted.trial import unittest

from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.uri import URI
from twisted_mfocus.transport import LocateError, Resolver

ZONE = b"example.test"


class MemoryAuthority(authority.FileAuthority):
    """An authoritative zone held in memory; counts the queries it answers."""

    def __init__(self, soa, records):
        common.ResolverBase.__init__(self)
        self.soa = soa
        self.records = records
        self._cache = {}
        self.asked = []

    def _lookup(self, name, cls, type, timeout=None):
        self.asked.append((name.decode(), dns.QUERY_TYPES.get(type, type)))
        return super()._lookup(name, cls, type, timeout)


def zone():
    soa = dns.Record_SOA(mname=b"ns." + ZONE, rname=b"root." + ZONE, serial=1,
                         refresh=60, retry=60, expire=60, minimum=30, ttl=30)
    return MemoryAuthority((ZONE, soa), {
        ZONE: [soa],
        b"_sip._udp." + ZONE: [
            dns.Record_SRV(10, 60, 5070, b"sip1." + ZONE, ttl=60),
            dns.Record_SRV(10, 40, 5071, b"sip2." + ZONE, ttl=60),
            dns.Record_SRV(20, 0, 5072, b"backup." + ZONE, ttl=60)],
        b"_sip._tcp." + ZONE: [dns.Record_SRV(10, 0, 5080, b"sip1." + ZONE, ttl=60)],
        b"_sips._tcp.secure." + ZONE: [
            dns.Record_SRV(0, 0, 5091, b"sip1." + ZONE, ttl=60)],
        b"sip1." + ZONE: [dns.Record_A("127.0.0.1", ttl=300),
                          dns.Record_AAAA("::1", ttl=300)],
        b"sip2." + ZONE: [dns.Record_A("127.0.0.2", ttl=300)],
        b"backup." + ZONE: [dns.Record_A("127.0.0.3", ttl=300)],
        b"plain." + ZONE: [dns.Record_A("127.0.0.4", ttl=120)],
        b"secure." + ZONE: [dns.Record_A("127.0.0.5", ttl=120)],
    })


class ResolverTests(unittest.TestCase):

    def setUp(self):
        self.zone = zone()
        factory = server.DNSServerFactory(authorities=[self.zone])
        factory.noisy = False
        self.port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        dns_client = client.Resolver(
            servers=[("127.0.0.1", self.port.getHost().port)], reactor=reactor)
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.resolver = Resolver(self.clock, dns_client, rng=random.Random(7),
                                 timeout=(2,))

    @defer.inlineCallbacks
    def test_srv_then_a(self):
        peers = yield self.resolver.locate(URI.parse("sip:conf@example.test"))
        # UDP first (our preference), RFC 2782 priority order within it; the
        # backup (priority 20) after both priority-10 servers; TCP after UDP;
        # _sips._tcp does not exist.
        udp = [p for p in peers if p.transport == "UDP"]
        self.assertEqual(set(udp[:3]), {Peer("UDP", "127.0.0.1", 5070),
                                        Peer("UDP", "::1", 5070),
                                        Peer("UDP", "127.0.0.2", 5071)})
        self.assertEqual(udp[3], Peer("UDP", "127.0.0.3", 5072))
        self.assertEqual([p for p in peers if p.transport != "UDP"],
                         [Peer("TCP", "127.0.0.1", 5080), Peer("TCP", "::1", 5080)])
        asked = {q for q in self.zone.asked}
        self.assertIn(("_sip._udp.example.test", "SRV"), asked)
        self.assertIn(("_sips._tcp.example.test", "SRV"), asked)
        self.assertIn(("sip1.example.test", "A"), asked)

    @defer.inlineCallbacks
    def test_transport_param_limits_srv(self):
        peers = yield self.resolver.locate(URI.parse("sip:example.test;transport=tcp"))
        self.assertEqual(peers, [Peer("TCP", "127.0.0.1", 5080), Peer("TCP", "::1", 5080)])
        self.assertNotIn(("_sip._udp.example.test", "SRV"), self.zone.asked)

    @defer.inlineCallbacks
    def test_sips_uses_sips_tcp(self):
        peers = yield self.resolver.locate(URI.parse("sips:conf@secure.example.test"))
        self.assertEqual(peers, [Peer("TLS", "127.0.0.1", 5091), Peer("TLS", "::1", 5091)])

    @defer.inlineCallbacks
    def test_no_srv_falls_back_to_a_with_default_port(self):
        peers = yield self.resolver.locate(URI.parse("sip:bob@plain.example.test"))
        self.assertEqual(peers, [Peer("UDP", "127.0.0.4", 5060)])
        peers = yield self.resolver.locate(URI.parse("sips:bob@plain.example.test"))
        self.assertEqual(peers, [Peer("TLS", "127.0.0.4", 5061)])

    @defer.inlineCallbacks
    def test_explicit_port_skips_srv(self):
        peers = yield self.resolver.locate(URI.parse("sip:sip1.example.test:5099"))
        self.assertEqual(peers, [Peer("UDP", "127.0.0.1", 5099), Peer("UDP", "::1", 5099)])
        peers = yield self.resolver.locate(URI.parse("sip:sip1.example.test:5099;transport=tcp"))
        self.assertEqual(peers, [Peer("TCP", "127.0.0.1", 5099), Peer("TCP", "::1", 5099)])
        self.assertFalse([q for q in self.zone.asked if q[1] == "SRV"])

    @defer.inlineCallbacks
    def test_ip_literal_skips_dns(self):
        peers = yield self.resolver.locate(URI.parse("sip:alice@127.0.0.1:5062;transport=tcp"))
        self.assertEqual(peers, [Peer("TCP", "127.0.0.1", 5062)])
        peers = yield self.resolver.locate(URI.parse("sip:[::1]"))
        self.assertEqual(peers, [Peer("UDP", "::1", 5060)])
        self.assertEqual(self.zone.asked, [])
        self.assertEqual(self.resolver.queries, 0)

    @defer.inlineCallbacks
    def test_cache_hit_and_ttl_expiry(self):
        uri = URI.parse("sip:bob@plain.example.test")
        yield self.resolver.locate(uri)
        asked = len(self.zone.asked)
        self.assertTrue(asked > 0)
        peers = yield self.resolver.locate(uri)
        self.assertEqual(peers, [Peer("UDP", "127.0.0.4", 5060)])
        self.assertEqual(len(self.zone.asked), asked)       # all from the cache
        self.clock.advance(29)      # negative answers (30 s) and A (120 s) still fresh
        yield self.resolver.locate(uri)
        self.assertEqual(len(self.zone.asked), asked)
        self.clock.advance(2)       # the negative SRV answers expired, not the A
        yield self.resolver.locate(uri)
        again = self.zone.asked[asked:]
        self.assertTrue(again)
        self.assertNotIn(("plain.example.test", "A"), again)
        self.clock.advance(120)     # now the A record too
        yield self.resolver.locate(uri)
        self.assertIn(("plain.example.test", "A"), self.zone.asked[asked + len(again):])

    @defer.inlineCallbacks
    def test_cache_is_bounded(self):
        self.resolver.max_entries = 3
        yield self.resolver.locate(URI.parse("sip:conf@example.test"))
        self.assertLessEqual(len(self.resolver._cache), 3)

    @defer.inlineCallbacks
    def test_unknown_name_fails(self):
        with self.assertRaises(LocateError):
            yield self.resolver.locate(URI.parse("sip:nobody@missing.example.test"))

    def test_tel_uri_fails(self):
        return self.assertFailure(self.resolver.locate(URI.parse("tel:+15551234")),
                                  LocateError)
