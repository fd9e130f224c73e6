"""Bounded under abuse: what one source can make a real ``twistd mfocus``
hold or write.  Every load is bounded in count and time; loopback only."""

import collections
import re
import select
import socket
import threading
import time

import pytest

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


@pytest.mark.slow
def test_one_source_cannot_take_every_connection(tmp_path, capsys):
    """2,000 idle connections from one host: beyond [sip]
    connections_per_source (default 64) they are closed at once, while
    another host (127.0.0.2) still connects and is answered, and UDP and
    the API go on."""
    node = Node("focus", "primary", 5, tmp_path).start()
    held = []
    try:
        for _ in range(2000):
            try:
                held.append(socket.create_connection(("127.0.0.1", node.port), timeout=2))
            except OSError:                     # refused: as good as closed
                pass
        time.sleep(1.0)

        poller = select.poll()                  # a closed stream is readable (EOF)
        for s in held:
            poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
        closed = {fd for fd, _ in poller.poll(500)}
        still_open = sum(s.fileno() not in closed for s in held)
        with capsys.disabled():
            print(f"\n  2,000 connections from one host: {still_open} kept open")
        assert still_open == 64
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


# -- per-source budgets ([limits], twisted_mfocus/budget.py) ------------------------

def _answerer(client, stop, seen):
    """Answer every NOTIFY arriving at ``client`` with 200 (a subscriber
    that is there), recording (Call-ID, CSeq, bytes) of each."""
    client.sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data = client.sock.recv(65535)
        except socket.timeout:
            continue
        except OSError:
            return
        text = data.decode("utf-8", "replace")
        if not text.startswith("NOTIFY "):
            continue
        seen.append((sipclient.header(text, "Call-ID"), sipclient.header(text, "CSeq"),
                     len(data)))
        try:
            client.sock.sendto(sipclient.ok_for(text), ("127.0.0.1", int(re.search(
                r"127\.0\.0\.1:(\d+)", sipclient.header(text, "Via")).group(1))))
        except OSError:
            return


def _join(port, room, host):
    """A member from ``host`` joins ``room`` (INVITE, 200, ACK); the status."""
    member = sipclient.UDP(host=host)
    call_id = f"member-{host}"
    ruri = f"sip:{room}@127.0.0.1:{port}"
    status, answer = member.ask(sipclient.request(
        "INVITE", ruri, member.port, body=sipclient.SDP, call_id=call_id, from_tag="m1",
        from_uri=f"sip:member@{host}:{member.port}"), port)
    if status == 200:
        to_tag = re.search(r"^To:.*;tag=([^;\s]+)", answer, re.M).group(1)
        member.send(sipclient.request("ACK", ruri, member.port, call_id=call_id,
                                      from_tag="m1", to_tag=to_tag,
                                      from_uri=f"sip:member@{host}:{member.port}"), port)
    member.close()
    return status


def test_a_flood_from_one_source_makes_nothing_and_others_go_on(tmp_path, capsys):
    """create_rooms = configured, the default [limits]: 2,000 INVITEs and
    2,000 SUBSCRIBEs from one source to random rooms make no room and hold
    no subscription; the source is answered 503 (Retry-After) or not at all
    once over its rate, while a member from 127.0.0.2 joins the configured
    room and OPTIONS from 127.0.0.3 are answered within 1 s throughout."""
    node = Node("focus", "primary", 20, tmp_path,
                "[focus]\ncreate_rooms = configured\n[room:board]\n").start()
    attacker = sipclient.UDP()
    answers, stop = [], threading.Event()

    def flood():
        for i in range(4000):
            method = "INVITE" if i % 2 else "SUBSCRIBE"
            attacker.send(sipclient.request(
                method, f"sip:r{i}@127.0.0.1:{node.port}", attacker.port,
                headers=[("Event", "conference"), ("Expires", "86400")] if i % 2 == 0 else (),
                body=sipclient.SDP if i % 2 else b""), node.port)
            if i % 100 == 99:
                time.sleep(0.05)                 # ~2,000 requests/s for 2 s
        stop.set()

    def collect():
        while not stop.is_set() or answers[-1:] != ["end"]:
            got = attacker.receive(0.5)
            answers.extend(got)
            if stop.is_set() and not got:
                answers.append("end")
                return
    flooder = threading.Thread(target=flood)
    collector = threading.Thread(target=collect)
    try:
        flooder.start()
        collector.start()
        options = []
        joined = None
        while not stop.is_set():
            probe = sipclient.UDP(host="127.0.0.3")
            options.append(probe.ask(sipclient.request(
                "OPTIONS", f"sip:board@127.0.0.1:{node.port}", probe.port,
                from_uri=f"sip:probe@127.0.0.3:{probe.port}"), node.port, timeout=1.0)[0])
            probe.close()
            if joined is None:
                joined = _join(node.port, "board", "127.0.0.2")
            time.sleep(0.05)
        flooder.join(30)
        collector.join(30)
        statuses = collections.Counter(int(a.split(" ", 2)[1]) for a in answers
                                       if a.startswith("SIP/2.0 "))
        finals = sum(n for s, n in statuses.items() if s >= 200)
        with capsys.disabled():
            print(f"\n  4,000 requests from one source: answered {dict(statuses)}; "
                  f"{len(options)} OPTIONS from another, all answered within 1 s: "
                  f"{all(s == 200 for s in options)}")
        assert joined == 200
        assert options and all(s == 200 for s in options), options
        assert statuses[503] > 0 and finals < 4000          # refused, then dropped
        assert "Retry-After" in next(a for a in answers if a.startswith("SIP/2.0 503"))
        conferences = node.api("/api/v1/conferences")
        assert [c["name"] for c in conferences] == ["board"], conferences
        assert node.conference("board")["subscriptions"] == 0
        assert node.process.log().count("over its request budget") <= 2
    finally:
        stop.set()
        attacker.close()
        stop_all([node])


def test_one_source_holds_its_budget_of_calls_and_subscriptions(tmp_path):
    """[limits] calls_per_source = 3, subscriptions_per_source = 3: the
    fourth of each from 127.0.0.1 (any port) gets 503, one from 127.0.0.2
    gets in."""
    node = Node("focus", "primary", 20, tmp_path,
                "[limits]\ncalls_per_source = 3\nsubscriptions_per_source = 3\n").start()
    clients = []
    try:
        def ask(method, host):
            client = sipclient.UDP(host=host)
            clients.append(client)
            status, answer = client.ask(sipclient.request(
                method, f"sip:room@127.0.0.1:{node.port}", client.port,
                from_uri=f"sip:user@{host}:{client.port}",
                headers=[("Event", "conference")] if method == "SUBSCRIBE" else (),
                body=sipclient.SDP if method == "INVITE" else b""), node.port)
            return status, answer and answer.split("\r\n", 1)[0]
        for method, reason in (("INVITE", "Too Many Calls From Your Address"),
                               ("SUBSCRIBE", "Too Many Subscriptions From Your Address")):
            got = [ask(method, "127.0.0.1") for _ in range(4)]
            assert [s for s, _ in got] == [200, 200, 200, 503], got
            assert got[3][1] == f"SIP/2.0 503 {reason}"
            assert ask(method, "127.0.0.2")[0] == 200
        view = node.conference("room")
        assert view["subscriptions"] == 4
    finally:
        for client in clients:
            client.close()
        stop_all([node])


def test_one_join_with_5000_subscribers_from_one_source(tmp_path, capsys):
    """5,000 SUBSCRIBEs from one socket: the source holds at most
    subscriptions_per_source (default 100) of them, so one join sends it at
    most that many NOTIFYs, within its NOTIFY byte budget."""
    node = Node("focus", "primary", 20, tmp_path, "[room:big]\n").start()
    subscriber = sipclient.UDP()
    stop, seen = threading.Event(), []
    responder = threading.Thread(target=_answerer, args=(subscriber, stop, seen))
    try:
        responder.start()
        for i in range(5000):
            subscriber.send(sipclient.request(
                "SUBSCRIBE", f"sip:big@127.0.0.1:{node.port}", subscriber.port,
                headers=[("Event", "conference"), ("Expires", "600")]), node.port)
            if i % 100 == 99:
                time.sleep(0.02)
        assert wait_for(lambda: node.conference("big") is not None, timeout=10)
        time.sleep(2)                            # the first NOTIFYs answered
        held = node.conference("big")["subscriptions"]
        before = len(seen)
        assert _join(node.port, "big", "127.0.0.2") == 200
        time.sleep(3)
        after = seen[before:]
        notifies = len({(c, q) for c, q, _ in after})
        sent = sum(n for _, _, n in after)
        with capsys.disabled():
            print(f"\n  5,000 SUBSCRIBEs from one source: {held} held; one join sent it "
                  f"{notifies} NOTIFYs ({sent} bytes)")
        assert 0 < held <= 100
        assert notifies <= held
        assert sent <= 1048576 + 65536 * 4
    finally:
        stop.set()
        responder.join(5)
        subscriber.close()
        stop_all([node])


def test_a_subscribe_whose_contact_is_elsewhere_sends_nothing_there(tmp_path):
    """A SUBSCRIBE from one port naming another in its Contact (a third
    party to flood) is refused 403; the other port receives nothing."""
    node = Node("focus", "primary", 5, tmp_path, "[room:room]\n").start()
    sender, victim = sipclient.UDP(), sipclient.UDP()
    try:
        status, answer = sender.ask(sipclient.request(
            "SUBSCRIBE", f"sip:room@127.0.0.1:{node.port}", sender.port,
            from_uri=f"sip:victim@127.0.0.1:{victim.port}",
            headers=[("Event", "conference")]), node.port)
        assert status == 403 and "Contact Is Not Where The SUBSCRIBE Came From" in answer
        assert victim.receive(2.0) == []
        assert node.conference("room")["subscriptions"] == 0
    finally:
        sender.close()
        victim.close()
        stop_all([node])
