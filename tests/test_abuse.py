"""Bounded under abuse: what one source can make a real ``twistd mfocus``
hold or write.  Every load is bounded in count and time; loopback only."""

import socket
import time

from . import sipclient
from .foci import Node, stop_all
from .harness import udp_options, wait_for


def test_a_slow_sender_is_closed_and_others_go_on(tmp_path, capsys):
    """Slow-loris: one byte every 0.25 s never makes a message; the stream
    is closed once [sip] message_timeout (2 s) has passed since its first
    byte, long before the message could be complete, while a complete
    request on another connection is answered."""
    node = Node("focus", "primary", 5, tmp_path, "[sip]\nmessage_timeout = 2\n").start()
    try:
        slow = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        data = sipclient.request("OPTIONS", f"sip:127.0.0.1:{node.port}", slow.getsockname()[1],
                                 "TCP")
        started, sent, closed = time.monotonic(), 0, False
        slow.settimeout(0.25)
        while sent < len(data) and time.monotonic() - started < 20:
            try:
                slow.send(data[sent:sent + 1])
                sent += 1
                if slow.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
            if sent == 2:                       # meanwhile a complete request is served
                other = sipclient.TCP(node.port)
                status, _ = other.ask(sipclient.request(
                    "OPTIONS", f"sip:127.0.0.1:{node.port}", other.port, "TCP"))
                other.close()
                assert status == 200
        elapsed = time.monotonic() - started
        slow.close()
        assert closed and sent < len(data), (sent, len(data))
        assert elapsed >= 2                     # not before its deadline
        with capsys.disabled():
            print(f"\n  slow sender closed {elapsed:.2f} s after its first byte "
                  f"({sent} of {len(data)} bytes sent; message_timeout 2 s)")
        assert udp_options(node.port) == 200
    finally:
        stop_all([node])


def test_a_flood_of_bad_datagrams_writes_few_log_lines(tmp_path, capsys):
    """50,000 malformed datagrams from one source: bad input is logged once
    per source per minute, with a count, not once per datagram."""
    node = Node("focus", "primary", 5, tmp_path).start()
    bad = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
           b"Max-Forwards: many\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\n"
           b"Call-ID: flood\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    try:
        before = node.process.log().count("bad message from")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for i in range(50_000):
                s.sendto(bad, ("127.0.0.1", node.port))
                if i % 2000 == 1999:
                    time.sleep(0.01)            # let the focus drain its socket
        assert wait_for(lambda: udp_options(node.port) == 200, timeout=30)
        lines = node.process.log().count("bad message from") - before
        with capsys.disabled():
            print(f"\n  50,000 bad datagrams: {lines} log lines")
        assert 0 < lines < 100
    finally:
        stop_all([node])


def test_no_server_header_unless_configured(tmp_path):
    """A scanner learns nothing of what answers: no Server header by
    default; [sip] server names one."""
    plain = Node("plain", "primary", 5, tmp_path).start()
    named = Node("named", "primary", 5, tmp_path, "[sip]\nserver = example-focus\n").start()
    client = sipclient.UDP()
    try:
        for node, expect in ((plain, None), (named, "example-focus")):
            status, answer = client.ask(sipclient.request(
                "OPTIONS", f"sip:room@127.0.0.1:{node.port}", client.port), node.port)
            assert status == 200 and sipclient.header(answer, "Server") == expect, answer
    finally:
        client.close()
        stop_all([plain, named])


def test_one_source_cannot_take_every_connection(tmp_path):
    """[sip] connections_per_source = 5: the sixth and later streams from
    one host are refused at once, while another host (127.0.0.2) still
    connects and is answered, and UDP and the API go on."""
    node = Node("focus", "primary", 5, tmp_path, "[sip]\nconnections_per_source = 5\n").start()
    held = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", node.port), timeout=2)
            held.append(s)
        time.sleep(0.5)

        def open_(s):
            s.settimeout(0.05)
            try:
                return s.recv(1) != b""
            except socket.timeout:
                return True                      # nothing to read: still open
            except OSError:
                return False
        assert sum(open_(s) for s in held) == 5
        other = sipclient.TCP(node.port, source="127.0.0.2")
        status, _ = other.ask(sipclient.request("OPTIONS", f"sip:127.0.0.1:{node.port}",
                                                other.port, "TCP"))
        other.close()
        assert status == 200
        assert udp_options(node.port) == 200
        assert node.api("/api/v1/conferences") == []
    finally:
        for s in held:
            s.close()
        stop_all([node])
