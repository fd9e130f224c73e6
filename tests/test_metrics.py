"""Prometheus metrics (issue 20, item 1): unit tests of metrics.py without a
reactor (the stack's counting, calls by outcome, the log observer, the
scrape-time collector, a whole focus on a Clock), the ``/metrics`` path
behind the API's guard, then a real ``twistd mfocus`` with SIPp members,
scraped over HTTP and parsed with prometheus_client's own parser."""

import os
import re
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.logger import Logger, LogPublisher
from twisted.web import resource
from twisted.web.test.requesthelper import DummyRequest

from twisted_mfocus.media.packet import build_rtp
from twisted_mfocus.metrics import CallOutcomes, Metrics, MetricsService, on_reactor
from twisted_mfocus.sip.message import SentResponse, make_response, parse_datagram
from twisted_mfocus.web.api import api_root

from . import sipclient
from .apiviews import Views
from .credentials import PASSWORDS, auth_config
from .focusrig import ROOM, SDP, Phone, join, make_rig
from .harness import SILENT_MEMBERS, Focus, Sipp, free_port, wait_for, write_config
from .peers.process import need


def samples(text):
    """{(sample name, sorted labels): value} of an exposition's text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scraped(metrics):
    return samples(generate_latest(metrics.registry).decode())


def value(table, name, **labels):
    return table.get((name, tuple(sorted(labels.items()))), 0.0)


def message(text):
    return parse_datagram(text.replace("\n", "\r\n").encode())


def request(method, branch="z9hG4bKa1", to_tag=None, cseq=1, host="10.0.0.1"):
    return message(f"{method} sip:room@focus SIP/2.0\n"
                   f"Via: SIP/2.0/UDP {host}:5060;branch={branch}\n"
                   "From: <sip:a@x>;tag=f1\n"
                   "To: <sip:room@focus>" + (f";tag={to_tag}" if to_tag else "") + "\n"
                   f"Call-ID: c1\nCSeq: {cseq} {method}\nMax-Forwards: 70\n"
                   "Content-Length: 0\n\n")


# -- the stack's counts ---------------------------------------------------------

def test_requests_by_method_and_anything_else_is_other():
    m = Metrics()
    for method in ("OPTIONS", "OPTIONS", "BYE", "FOO", "BAR"):
        m.received(request(method))
    table = scraped(m)
    assert value(table, "mfocus_sip_requests_total", method="OPTIONS") == 2
    assert value(table, "mfocus_sip_requests_total", method="BYE") == 1
    assert value(table, "mfocus_sip_requests_total", method="other") == 2
    assert ("mfocus_sip_requests_total", (("method", "INVITE"),)) in table     # 0, shown
    assert not any("FOO" in str(key) for key in table)


def test_responses_by_cseq_method_class_and_direction():
    m = Metrics()
    options = request("OPTIONS")
    ok = make_response(options, 200, to_tag="t")
    m.sent(ok)
    m.sent(SentResponse(make_response(options, 404, to_tag="t")))     # kept as bytes
    m.received(make_response(request("NOTIFY"), 481, to_tag="t"))
    table = scraped(m)
    assert value(table, "mfocus_sip_responses_total", method="OPTIONS", direction="sent",
                 **{"class": "2xx"}) == 1
    assert value(table, "mfocus_sip_responses_total", method="OPTIONS", direction="sent",
                 **{"class": "4xx"}) == 1
    assert value(table, "mfocus_sip_responses_total", method="NOTIFY", direction="received",
                 **{"class": "4xx"}) == 1


def test_a_sent_response_reads_its_cseq_from_the_cseq_line():
    response = make_response(request("OPTIONS", cseq=7), 200, to_tag="t")
    kept = SentResponse(response)
    assert (kept.cseq.seq, kept.cseq.method) == (7, "OPTIONS")
    assert kept.cseq == response.cseq
    came = message("SIP/2.0 200 OK\nvia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\n"
                   "from: <sip:a@x>;tag=1\nto: <sip:b@x>;tag=2\ncall-id: c\n"
                   "cseq: 3 BYE\ncontent-length: 0\n\n")
    assert SentResponse(came).cseq.method == "BYE"     # lines as they came: parsed whole


def test_parse_errors():
    m = Metrics()
    m.bad_message()
    assert value(scraped(m), "mfocus_sip_parse_errors_total") == 1


# -- calls --------------------------------------------------------------------------

def calls(m):
    return calls_of(scraped(m))


def test_a_call_counts_once_by_its_first_final_response():
    m = Metrics()
    invite = request("INVITE")
    m.received(invite)
    m.received(invite)                          # a retransmission
    m.sent(make_response(invite, 100))
    ok = make_response(invite, 200, to_tag="t")
    m.sent(ok)
    m.sent(ok)                                  # the 2xx again until the ACK
    m.received(invite)                          # a late retransmission: not a new call
    m.sent(ok)
    reinvite = request("INVITE", branch="z9hG4bKa2", to_tag="t", cseq=2)
    m.received(reinvite)
    m.sent(make_response(reinvite, 491))        # in a dialog: not a call
    assert calls(m) == {("in", "answered"): 1}


@pytest.mark.parametrize("status, result", [(302, "redirected"), (401, "refused"),
                                            (486, "refused"), (487, "refused"),
                                            (503, "failed"), (603, "refused")])
def test_what_a_refused_call_counts_as(status, result):
    m = Metrics()
    invite = request("INVITE")
    m.received(invite)
    m.sent(SentResponse(make_response(invite, status, to_tag="t")))
    m.sent(SentResponse(make_response(invite, status, to_tag="t")))     # resent
    assert calls(m) == {("in", result): 1}


def test_calls_we_place_count_by_the_answer_we_receive():
    m = Metrics()
    invite = request("INVITE", branch="z9hG4bKout", host="127.0.0.1")
    m.sent(invite)
    m.sent(invite)                              # Timer A
    m.received(make_response(invite, 180, to_tag="t"))
    m.received(make_response(invite, 200, to_tag="t"))
    m.received(make_response(invite, 200, to_tag="t"))
    assert calls(m) == {("out", "answered"): 1}


def test_the_call_table_is_bounded(monkeypatch):
    monkeypatch.setattr(CallOutcomes, "LIMIT", 3)
    m = Metrics()
    invites = [request("INVITE", branch=f"z9hG4bK{i}") for i in range(10)]
    for invite in invites:
        m.received(invite)                      # never answered
    assert len(m.outcomes.open) == 3
    for invite in invites:
        m.sent(make_response(invite, 200, to_tag="t"))
    assert calls(m) == {("in", "answered"): 3}  # the newest three
    assert len(m.outcomes.done) == 3


# -- the log observer, the collector, the registry ------------------------------------

class FakeViews:
    def __init__(self, rooms):
        self.rooms = rooms

    def gauges(self):
        return iter(self.rooms)


class FakeEngine:
    def __init__(self, totals):
        self.totals = totals

    def rtp_totals(self):
        return self.totals


def test_handovers_and_takeovers_are_read_from_the_log():
    m, publisher = Metrics(), LogPublisher()
    engine = FakeEngine((0, 0, {}))
    focus = SimpleNamespace(audio=SimpleNamespace(engine=engine), auth=SimpleNamespace(),
                            notifier=SimpleNamespace(), views=FakeViews([]))
    service = MetricsService(m, focus, publisher=publisher)
    service.startService()
    assert focus.auth.metrics is m and focus.notifier.metrics is m and engine.metrics is m
    log = Logger(observer=publisher)
    log.info("handing {member} over", member="sip:a@x", event="handover")
    log.info("handing {member} over", member="sip:b@x", event="handover")
    log.info("taking over {count} members", count=4, event="takeover")
    log.info("something else", event="joined")
    service.stopService()
    log.info("handing {member} over", member="sip:c@x", event="handover")     # not listened to
    table = scraped(m)
    assert value(table, "mfocus_handovers_total") == 2
    assert value(table, "mfocus_takeovers_total") == 1
    assert value(table, "mfocus_takeover_members_total") == 4


def test_gauges_and_rtp_counts_are_read_at_scrape_time():
    rooms = [("room", 3, 2, 1), ("other", 1, 1, 0)]
    engine = FakeEngine((120, 118, {"source": 5, "auth": 0}))
    m = Metrics()
    m.collect_from(FakeViews(rooms), engine)
    table = scraped(m)
    assert value(table, "mfocus_conferences") == 2
    assert value(table, "mfocus_members", conference="room") == 3
    assert value(table, "mfocus_foci", conference="room") == 2
    assert value(table, "mfocus_focus_links_up", conference="room") == 1
    assert value(table, "mfocus_members", conference="other") == 1
    assert value(table, "mfocus_rtp_packets_received_total") == 120
    assert value(table, "mfocus_rtp_packets_sent_total") == 118
    assert value(table, "mfocus_rtp_packets_dropped_total", reason="source") == 5
    rooms.pop()
    engine.totals = (130, 128, {"source": 5, "auth": 0})
    m.collect_from(FakeViews(rooms), engine)    # again: replaces, never duplicates
    table = scraped(m)
    assert value(table, "mfocus_conferences") == 1
    assert value(table, "mfocus_rtp_packets_received_total") == 130


def test_each_metrics_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.bad_message()
    assert value(scraped(a), "mfocus_sip_parse_errors_total") == 1
    assert value(scraped(b), "mfocus_sip_parse_errors_total") == 0


class ThreadReactor:
    """callFromThread queues; the test's main thread runs the queue."""

    def __init__(self):
        self.calls = []
        self.ready = threading.Event()

    def callFromThread(self, f, *args):
        self.calls.append((f, args))
        self.ready.set()


def test_a_scrape_thread_reads_the_state_on_the_reactor_thread():
    reactor, seen, out = ThreadReactor(), [], []
    read = on_reactor(reactor, timeout=10)

    def snapshot():
        seen.append(threading.current_thread())
        return 42
    worker = threading.Thread(target=lambda: out.append(read(snapshot)))
    worker.start()
    assert reactor.ready.wait(10)
    for f, args in reactor.calls:
        f(*args)
    worker.join(10)
    assert out == [42] and seen == [threading.current_thread()]


def test_a_reactor_that_does_not_answer_leaves_the_gauges_out():
    m = Metrics(read=on_reactor(ThreadReactor(), timeout=0.01))
    m.collect_from(FakeViews([("room", 1, 1, 0)]), FakeEngine((0, 0, {})))
    m.bad_message()
    out = []
    worker = threading.Thread(target=lambda: out.append(scraped(m)))
    worker.start()
    worker.join(10)
    (table,) = out
    assert value(table, "mfocus_sip_parse_errors_total") == 1
    assert not any(name == "mfocus_members" for name, _ in table)


# -- a whole focus on a Clock ----------------------------------------------------------

def metered_rig(config_text=None):
    """focusrig's focus, its wire and deliveries counted as the stack counts them."""
    rig = make_rig(config_text=config_text)
    m = Metrics()
    m.attach(rig.focus)
    wire, deliver = rig.wire, rig.deliver

    def send(message, peer, _send=wire.send):
        _send(message, peer)
        m.sent(message)
    wire.send = wire.send_response = send

    def counted(message, peer):
        message.validate()
        m.received(message)
        deliver(message, peer)
    rig.deliver = counted
    return rig, m


def test_a_focus_on_a_clock_shows_its_members_calls_notifies_and_rtp():
    rig, m = metered_rig()
    alice, bob = Phone(5071), Phone(5072)
    ok = join(rig, alice)
    join(rig, bob)
    table = scraped(m)
    assert value(table, "mfocus_conferences") == 1
    assert value(table, "mfocus_members", conference="room") == 2
    assert value(table, "mfocus_foci", conference="room") == 1
    assert value(table, "mfocus_focus_links_up", conference="room") == 0
    assert value(table, "mfocus_calls_total", direction="in", result="answered") == 2
    # A watcher: the NOTIFY bodies it is sent, byte for byte.
    watcher = Phone(5073)
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference"),
                                                            ("Expires", "60")]), watcher.peer)
    rig.clock.advance(0.5)
    notifies = rig.wire.take("NOTIFY")
    assert notifies
    assert value(scraped(m), "mfocus_notify_bytes_total", event="conference") == sum(
        len(n.body) for n in notifies)
    # RTP: alice's packets from her SDP address are taken, a stranger's dropped.
    engine = rig.focus.audio.engine
    stream = next(s for leg, (_, s) in engine.streams.items() if leg.call_id == alice.call_id)
    for seq in range(5):
        stream.rtp_received(build_rtp(0, seq, seq * 160, 1234, b"\xff" * 160),
                            ("127.0.0.1", 4000))
    stream.rtp_received(build_rtp(0, 9, 0, 99, b"\xff" * 160), ("127.0.0.1", 6666))
    for _ in range(10):
        rig.clock.advance(0.02)
    sent = sum(s.sent_packets for _, s in engine.streams.values())
    # Alice hangs up: her stream's counts stay in the totals.
    rig.deliver(alice.request("BYE", ROOM, to_tag=ok.to.tag), alice.peer)
    table = scraped(m)
    assert value(table, "mfocus_members", conference="room") == 1
    assert value(table, "mfocus_rtp_packets_received_total") == 5
    assert value(table, "mfocus_rtp_packets_dropped_total", reason="source") == 1
    assert value(table, "mfocus_rtp_packets_sent_total") == sent > 0
    assert value(table, "mfocus_mixer_tick_lateness_seconds_count") >= 10
    assert value(table, "mfocus_sip_requests_total", method="BYE") == 1


def test_a_wrong_password_is_one_auth_failure(tmp_path):
    rig, m = metered_rig(auth_config(tmp_path, extra="[room:board]\nmembers = alice\n"))
    phone, uri = Phone(5074, user="alice"), "sip:board@127.0.0.1:5060"
    rig.deliver(phone.request("INVITE", uri, body=SDP), phone.peer)
    (challenge,) = rig.wire.take(401)
    assert value(scraped(m), "mfocus_auth_failures_total") == 0    # asked, not failed
    wrong = sipclient.digest(challenge.headers.get("www-authenticate"), "INVITE", uri,
                             "alice", "not-" + PASSWORDS["alice"])
    rig.deliver(phone.request("INVITE", uri, body=SDP, call_id="second",
                              headers=[("Authorization", wrong)]), phone.peer)
    assert rig.wire.take(401)
    table = scraped(m)
    assert value(table, "mfocus_auth_failures_total") == 1
    assert value(table, "mfocus_calls_total", direction="in", result="refused") == 2


# -- /metrics behind the guard ----------------------------------------------------------

class Exposition(resource.Resource):
    """Stands in for prometheus_client's resource (which needs a reactor)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.rendered = 0

    def render_GET(self, request):
        self.rendered += 1
        return b"mfocus_conferences 0\n"


TOKEN = "0123456789abcdef-test-token"


def get(root, path, method="GET", host="127.0.0.1:8080", token=TOKEN):
    req = DummyRequest(path.encode().split(b"/")[1:])
    req.method = method.encode()
    req.clientproto = b"HTTP/1.1"
    from twisted.internet.address import IPv4Address
    req.client = IPv4Address("TCP", "10.0.0.7", 40000)
    req.getHost = lambda: IPv4Address("TCP", "127.0.0.1", 8080)
    req.isSecure = lambda: False
    req.requestHeaders.addRawHeader(b"host", host.encode())
    if token:
        req.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
    if method == "POST":
        req.requestHeaders.addRawHeader(b"content-type", b"application/json")
    body = root.render(req)
    return req.responseCode or 200, body


def test_metrics_path_passes_the_guard_first():
    exposition = Exposition()
    root = api_root(Views(), token=TOKEN, names=(), metrics=exposition)
    assert get(root, "/metrics") == (200, b"mfocus_conferences 0\n")
    assert get(root, "/metrics", token=None)[0] == 401
    assert get(root, "/metrics", token="wrong-token-0123456789")[0] == 401
    assert get(root, "/metrics", host="evil.example")[0] == 421
    assert get(root, "/metrics", method="POST")[0] == 405
    assert get(root, "/metrics/more")[0] == 404
    assert exposition.rendered == 1
    assert get(api_root(Views(), token=TOKEN, names=()), "/metrics")[0] == 404  # none given


# -- a real twistd mfocus ------------------------------------------------------------------

def scrape(http, token=TOKEN, host=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if host:
        headers["Host"] = host
    req = urllib.request.Request(f"http://127.0.0.1:{http}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, samples(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, None


def test_a_real_focus_counts_exactly_what_it_was_sent(tmp_path):
    """Three SIPp members in one conference; then N OPTIONS, one bad
    datagram, a wrong password, a watcher: each moves its counters by
    exactly that traffic (deltas between scrapes)."""
    need("sipp")
    port, http = free_port(), free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    config = write_config(tmp_path, SILENT_MEMBERS + auth_config(
        tmp_path, extra="[room:board]\nmembers = alice\n") +
        f"[http]\ntoken_file = {token_file}\n[events]\nnotify_interval = 0.05\n")
    focus = Focus(["--listen", f"udp:127.0.0.1:{port}", "--rtp-ports", "33000-33099",
                   "--http", f"tcp:{http}:interface=127.0.0.1", "--config", config], tmp_path)
    members = client = None
    try:
        focus.wait_ready(port)
        assert scrape(http, token=None)[0] == 401
        assert scrape(http, host="evil.example")[0] == 421
        status, before = scrape(http)
        assert status == 200
        assert value(before, "mfocus_conferences") == 0
        members = Sipp("member.xml", f"127.0.0.1:{port}", tmp_path,
                       ["-s", "room", "-m", "3", "-l", "3", "-set", "wait_bye", "1"])
        joined = wait_for(lambda: (t := scrape(http)[1]) and value(
            t, "mfocus_members", conference="room") == 3 and t, timeout=20)
        assert joined, focus.log()
        assert value(joined, "mfocus_conferences") == 1
        assert value(joined, "mfocus_foci", conference="room") == 1
        assert value(joined, "mfocus_focus_links_up", conference="room") == 0
        assert calls_of(joined) == {("in", "answered"): 3}
        assert value(joined, "mfocus_sip_requests_total", method="ACK") - value(
            before, "mfocus_sip_requests_total", method="ACK") == 3

        client = sipclient.UDP()
        for _ in range(5):
            status, _ = client.ask(sipclient.request("OPTIONS", f"sip:127.0.0.1:{port}",
                                                     client.port), port)
            assert status == 200
        client.send(b"this is not SIP at all\r\n\r\n", port)
        # A wrong password for the members-only room: challenged, then refused.
        uri = f"sip:board@127.0.0.1:{port}"
        status, challenge = client.ask(sipclient.request(
            "INVITE", uri, client.port, body=sipclient.SDP,
            from_uri=f"sip:alice@127.0.0.1:{client.port}"), port)
        assert status == 401
        wrong = sipclient.digest(sipclient.header(challenge, "WWW-Authenticate"), "INVITE",
                                 uri, "alice", "not-" + PASSWORDS["alice"])
        status, _ = client.ask(sipclient.request(
            "INVITE", uri, client.port, body=sipclient.SDP,
            from_uri=f"sip:alice@127.0.0.1:{client.port}",
            headers=[("Authorization", wrong)]), port)
        assert status == 401
        # A watcher of the room: its NOTIFYs' bodies, each answered once.
        status, _ = client.ask(sipclient.request(
            "SUBSCRIBE", f"sip:room@127.0.0.1:{port}", client.port,
            headers=[("Event", "conference"), ("Expires", "60")]), port)
        assert status == 200
        # Its NOTIFYs (a full one, a partial one if something changed),
        # each answered; retransmissions (same CSeq) count once.
        bodies = {}

        def notified():
            for text in answer_notifies(client, port):
                bodies[sipclient.header(text, "CSeq")] = int(
                    sipclient.header(text, "Content-Length"))
            table = scrape(http)[1]
            return bodies and delta(before, table, "mfocus_notify_bytes_total",
                                    event="conference") == sum(bodies.values()) and table
        after = wait_for(notified, timeout=15)
        assert after, bodies
    finally:
        if client is not None:          # the watcher answers its final NOTIFY
            focus.terminate()
            wait_for(lambda: answer_notifies(client, port) or not focus.alive(), timeout=25)
            client.close()
        focus.stop()
        if members is not None:
            members.wait()
    assert delta(before, after, "mfocus_sip_requests_total", method="OPTIONS") == 5
    assert delta(before, after, "mfocus_sip_responses_total", method="OPTIONS",
                 direction="sent", **{"class": "2xx"}) == 5
    assert delta(before, after, "mfocus_sip_parse_errors_total") == 1
    assert delta(before, after, "mfocus_auth_failures_total") == 1
    assert delta(before, after, "mfocus_sip_requests_total", method="SUBSCRIBE") == 1
    assert calls_of(after) == {("in", "answered"): 3, ("in", "refused"): 2}
    assert value(after, "mfocus_members", conference="room") == 3
    assert value(after, "mfocus_handovers_total") == 0
    assert value(after, "process_open_fds") > 0
    assert not re.search(r"Traceback", focus.log()), focus.log()


def answer_notifies(client, port):
    """The NOTIFYs ``client`` receives within 0.3 s, each answered 200."""
    notifies = [text for text in client.receive(0.3) if text.startswith("NOTIFY ")]
    for text in notifies:
        client.send(sipclient.ok_for(text), port)
    return notifies


def delta(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def calls_of(table):
    return {(d, r): value(table, "mfocus_calls_total", direction=d, result=r)
            for d in ("in", "out") for r in ("answered", "redirected", "refused", "failed")
            if value(table, "mfocus_calls_total", direction=d, result=r)}

