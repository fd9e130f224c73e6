"""The RTP port pool on real loopback sockets (127.0.0.1, and ::1 if present).

trial ``TestCase``s (pytest runs them).  Each test picks a small range of
ports it has just checked to be free, so a busy machine does not make the
assertions about which port comes next flaky.
"""

import random
import socket

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from twisted_mfocus.media.rtp import PortsExhausted, RTPPortPool


def bindable(port, family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_range(pairs, family=socket.AF_INET, host="127.0.0.1"):
    """(low, high) of ``pairs`` even/odd pairs, all currently free."""
    for _ in range(200):
        low = random.randrange(20000, 60000, 2)
        if all(bindable(p, family, host) for p in range(low, low + 2 * pairs)):
            return low, low + 2 * pairs - 1
    raise RuntimeError("no free UDP port range on loopback")


def ipv6_available():
    return bindable(0, socket.AF_INET6, "::1")


class PoolTests(unittest.TestCase):

    def pool(self, pairs, **options):
        low, high = free_range(pairs)
        pool = RTPPortPool(reactor, low, high, **options)
        self.addCleanup(pool.release_all)
        return pool, low

    def occupy(self, port, family=socket.AF_INET, host="127.0.0.1"):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((host, port))
        self.addCleanup(s.close)
        return s

    @defer.inlineCallbacks
    def wait_for(self, condition, timeout=5.0):
        waited = 0.0
        while not condition():
            if waited > timeout:
                self.fail("condition not met in time")
            yield task.deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

    def test_even_ports_with_rtcp_next(self):
        pool, low = self.pool(3)
        endpoints = [pool.allocate() for _ in range(3)]
        self.assertEqual([e.port for e in endpoints], [low, low + 2, low + 4])
        for e in endpoints:
            self.assertEqual(e.port % 2, 0)
            self.assertEqual(e.rtcp_port, e.port + 1)
            # both sockets are really ours now
            self.assertFalse(bindable(e.port))
            self.assertFalse(bindable(e.rtcp_port))
        self.assertEqual(pool.in_use, 3)

    def test_odd_low_is_rounded_up(self):
        low, high = free_range(2)
        pool = RTPPortPool(reactor, low - 1, high)
        self.addCleanup(pool.release_all)
        self.assertEqual(pool.allocate().port, low)

    def test_bad_ranges(self):
        for low, high in [(10001, 10001), (10000, 10000), (10002, 10000), (0, 10), (65534, 65536)]:
            self.assertRaises(ValueError, RTPPortPool, reactor, low, high)

    def test_taken_rtp_port_is_skipped(self):
        pool, low = self.pool(2)
        self.occupy(low)
        self.assertEqual(pool.allocate().port, low + 2)

    @defer.inlineCallbacks
    def test_taken_rtcp_port_is_skipped(self):
        pool, low = self.pool(2)
        self.occupy(low + 1)
        endpoint = pool.allocate()
        self.assertEqual(endpoint.port, low + 2)
        # the RTP half of the failed pair is closed (on the next reactor turn)
        yield self.wait_for(lambda: bindable(low))

    def test_exhaustion(self):
        pool, low = self.pool(2)
        pool.allocate()
        self.occupy(low + 2)
        self.assertRaises(PortsExhausted, pool.allocate)
        self.assertEqual(pool.in_use, 1)

    @defer.inlineCallbacks
    def test_release_frees_the_port(self):
        pool, low = self.pool(2, max_idle=0)
        first, second = pool.allocate(), pool.allocate()
        self.assertRaises(PortsExhausted, pool.allocate)
        yield pool.release(first)
        self.assertEqual(pool.in_use, 1)
        self.assertTrue(bindable(first.port) and bindable(first.rtcp_port))
        again = pool.allocate()
        self.assertEqual(again.port, first.port)
        self.assertIsNot(again, first)
        # releasing twice, or an endpoint no longer held, is harmless
        yield pool.release(first)
        self.assertEqual(pool.in_use, 2)
        yield pool.release(second)
        self.assertEqual(pool.in_use, 1)

    def test_released_pair_stays_bound_and_is_reused_after_quiet_time(self):
        clock = task.Clock()
        pool, low = self.pool(3, clock=clock, quiet=2.0)
        first = pool.allocate()
        first.packets = 5
        pool.release(first)
        self.assertFalse(bindable(first.port))          # kept bound, not closed
        self.assertNotEqual(pool.allocate().port, first.port)   # too fresh
        clock.advance(2.0)
        again = pool.allocate()
        self.assertIs(again, first)
        self.assertEqual(again.packets, 0)              # counters start afresh

    def test_idle_pair_is_used_rather_than_exhausting(self):
        pool, low = self.pool(1)
        first = pool.allocate()
        pool.release(first)
        self.assertIs(pool.allocate(), first)
        self.assertRaises(PortsExhausted, pool.allocate)

    def test_released_port_is_reused_last(self):
        pool, low = self.pool(3)
        first = pool.allocate()
        pool.release(first)
        self.assertEqual(pool.allocate().port, low + 2)

    @defer.inlineCallbacks
    def test_datagrams_are_counted(self):
        pool, _ = self.pool(1)
        endpoint = pool.allocate()
        self.assertEqual((endpoint.packets, endpoint.octets, endpoint.last_source),
                         (0, 0, None))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.bind(("127.0.0.1", 0))
        rtp = bytes([0x80, 0x00]) + bytes(10) + bytes(160)     # header + 20 ms PCMU
        sender.sendto(rtp, ("127.0.0.1", endpoint.port))
        sender.sendto(rtp[:100], ("127.0.0.1", endpoint.port))
        sender.sendto(b"\x81\xc9\x00\x01" + bytes(4), ("127.0.0.1", endpoint.rtcp_port))
        yield self.wait_for(lambda: endpoint.packets == 2 and endpoint.rtcp_packets == 1)
        self.assertEqual(endpoint.octets, len(rtp) + 100)
        self.assertEqual(endpoint.last_source, sender.getsockname())

    @defer.inlineCallbacks
    def test_the_reactor_watches_one_descriptor_for_all_the_sockets(self):
        """Every port of the pool is read through one epoll: one reader in
        the reactor however many pairs, gone once the last pair closes."""
        def rtp_readers():          # the pool's reader logs as "RTP"
            return [r for r in reactor.getReaders() if r.logPrefix() == "RTP"]
        pool, _ = self.pool(3)
        endpoints = [pool.allocate() for _ in range(3)]
        self.assertEqual(len(rtp_readers()), 1)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        for e in endpoints:
            for _ in range(3):
                sender.sendto(bytes([0x80, 0x00]) + bytes(10), ("127.0.0.1", e.port))
        yield self.wait_for(lambda: all(e.packets == 3 for e in endpoints))
        yield pool.release_all()
        self.assertEqual(rtp_readers(), [])

    @defer.inlineCallbacks
    def test_ipv6(self):
        if not ipv6_available():
            raise unittest.SkipTest("no IPv6 loopback")
        low, high = free_range(1, socket.AF_INET6, "::1")
        pool = RTPPortPool(reactor, low, high, interface="::1")
        self.addCleanup(pool.release_all)
        endpoint = pool.allocate()
        sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.sendto(b"x" * 12, ("::1", endpoint.port))
        yield self.wait_for(lambda: endpoint.packets == 1)
        self.assertEqual(endpoint.last_source[0], "::1")
