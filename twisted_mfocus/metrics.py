"""Prometheus metrics of one focus process (issue 20): ``GET /metrics`` on
the ``--http`` listener, through prometheus_client's Twisted resource,
behind the API's guard (web/api.py).

One ``Metrics`` per process, with a registry of its own (never the global
REGISTRY: unit tests build several).  tap.py makes it, gives it to the
stack, and starts ``MetricsService`` after the stack, which hands it to
the focus's pieces once they exist.  Where each figure comes from:

- **Counted where it happens**, once per event:
  ``mfocus_sip_requests_total{method}``: every valid request received,
  retransmissions included (SIPService._message_received);
  ``mfocus_sip_responses_total{method,class,direction}``: every response
  sent (``direction="sent"``: by the transactions or statelessly) and
  received (``"received"``), by its CSeq method and class (``"2xx"``),
  retransmissions included: what crossed the wire;
  ``mfocus_sip_parse_errors_total``: messages that failed to parse or
  validate (SIPService._bad_message);
  ``mfocus_calls_total{direction,result}``: see ``CallOutcomes``;
  ``mfocus_auth_failures_total``: digests refused (focus/identity.py);
  ``mfocus_notify_bytes_total{event}``: NOTIFY bodies handed to the UA
  (focus/subscriptions.py);
  ``mfocus_mixer_tick_lateness_seconds``: once per 20 ms tick, and
  ``mfocus_jitter_buffer_delay_seconds``: each receiving party's playout
  delay, sampled at every RTCP report (5 s) (media/engine.py).
- **Read at scrape time** (``FocusCollector``), so nothing is counted per
  packet or per join: conferences, members, foci and links up per
  conference from the API's read model (focus/views.py), and RTP packets
  received, sent and dropped by reason from the engine's own counts
  (``MediaEngine.rtp_totals``, ended streams included).
- ``process_*`` (prometheus_client's ProcessCollector, read from /proc
  when scraped): CPU, memory, open file descriptors against the limit.
- **From the log**: focus/delegation.py and focus/failover.py already log
  ``event="handover"`` (a REFER handing a member over is sent) and
  ``event="takeover"`` (a failed focus's members are taken over, with their
  ``count``); ``Metrics.observe``, a twisted.logger observer, counts those,
  so the modules that decide them need no hook.

Labels a peer chooses cannot grow the label set: a method that is not RFC
3261's or an extension's (message.KNOWN_METHODS) is ``"other"``.

prometheus_client's Twisted resource runs the exposition in the reactor's
thread pool (a WSGI app); the rooms and streams change on the reactor's
thread, so the collector reads them there (``on_reactor``).
"""

import queue

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from twisted.application import service
from twisted.logger import globalLogPublisher
from twisted.python import threadable

from .sip.errors import SIPError
from .sip.message import KNOWN_METHODS, Request

__all__ = ["CallOutcomes", "FocusCollector", "Metrics", "MetricsService", "on_reactor"]

OTHER = "other"
SENT, RECEIVED = "sent", "received"
IN, OUT = "in", "out"
#: result of a call by the class of its INVITE's final response
RESULTS = {2: "answered", 3: "redirected", 4: "refused", 5: "failed", 6: "refused"}
CLASSES = {n: f"{n}xx" for n in range(1, 7)}
#: seconds a scrape waits for the reactor's thread (it is stopping, or stuck)
READ_TIMEOUT = 5.0
#: how late a tick ran: the reactor's slack is well under 1 ms, trouble is 20 ms (a tick)
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
#: playout delay: whole 20 ms frames ([media] jitter_min..jitter_max, 1..8 by default)
DELAY_BUCKETS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.2, 0.3, 0.5, 1.0)


class Metrics:
    """The collectors of one focus and its registry.  ``read(f)`` returns
    ``f()`` run where the focus's state may be read (``on_reactor``; the
    default calls it at once, for tests without a reactor)."""

    def __init__(self, read=None):
        self.read = read or (lambda f: f())
        r = self.registry = CollectorRegistry()
        self.sip_requests = Counter("mfocus_sip_requests", "SIP requests received "
                                    "(retransmissions included), by method", ["method"],
                                    registry=r)
        self.sip_responses = Counter("mfocus_sip_responses", "SIP responses sent and received "
                                     "(retransmissions included), by CSeq method and class",
                                     ["method", "class", "direction"], registry=r)
        self.sip_parse_errors = Counter("mfocus_sip_parse_errors", "SIP messages that failed "
                                        "to parse or validate", registry=r)
        self.calls = Counter("mfocus_calls", "Dialog-creating INVITEs by their final "
                             "response: in (answered by us) or out (sent by us)",
                             ["direction", "result"], registry=r)
        self.auth_failures = Counter("mfocus_auth_failures", "Digest credentials refused "
                                     "(wrong password, unknown user, replay)", registry=r)
        self.notify_bytes = Counter("mfocus_notify_bytes", "NOTIFY body bytes sent, by event "
                                    "package", ["event"], registry=r)
        self.handovers = Counter("mfocus_handovers", "Members handed to another focus "
                                 "(REFER with Replaces sent)", registry=r)
        self.takeovers = Counter("mfocus_takeovers", "Failed foci whose members this focus "
                                 "took over", registry=r)
        self.takeover_members = Counter("mfocus_takeover_members", "Members of failed foci "
                                        "this focus took over", registry=r)
        self.tick_lateness = Histogram("mfocus_mixer_tick_lateness_seconds", "How late each "
                                       "20 ms mixing tick ran", buckets=LATENESS_BUCKETS,
                                       registry=r)
        self.jitter_delay = Histogram("mfocus_jitter_buffer_delay_seconds", "Playout delay "
                                      "of each receiving party's jitter buffer, sampled every "
                                      "RTCP interval", buckets=DELAY_BUCKETS, registry=r)
        ProcessCollector(registry=r)            # CPU, memory, file descriptors
        # Children made once: a label lookup per message would cost more.
        self._requests = {m: self.sip_requests.labels(m) for m in (*KNOWN_METHODS, OTHER)}
        self._responses = {}
        self._notify = {}
        self.outcomes = CallOutcomes(self.calls)
        self._collector = None

    # -- the stack (SIPService) ------------------------------------------------

    def received(self, message):
        """A valid message from the transport."""
        if isinstance(message, Request):
            method = message.method
            (self._requests.get(method) or self._requests[OTHER]).inc()
            if method == "INVITE" and message.to.tag is None:
                self.outcomes.offered(message, IN)
        else:
            self._response(message, RECEIVED)

    def sent(self, message):
        """A message the transport took."""
        if not isinstance(message, Request):
            self._response(message, SENT)
        elif message.method == "INVITE" and message.to.tag is None:
            self.outcomes.offered(message, OUT)

    def bad_message(self):
        self.sip_parse_errors.inc()

    def _response(self, response, direction):
        try:
            cseq = response.cseq
            method = cseq.method if cseq.method in KNOWN_METHODS else OTHER
        except (SIPError, AttributeError):      # a stateless 400's copy of a bad CSeq
            method = OTHER
        kind = response.status // 100
        key = (method, kind, direction)
        child = self._responses.get(key)
        if child is None:
            child = self._responses[key] = self.sip_responses.labels(
                method, CLASSES.get(kind, OTHER), direction)
        child.inc()
        if method == "INVITE" and kind >= 2:
            self.outcomes.answered(response, IN if direction == SENT else OUT)

    # -- the focus's pieces ----------------------------------------------------

    def notified(self, event, size):
        """A NOTIFY with a body of ``size`` bytes of package ``event``."""
        child = self._notify.get(event)
        if child is None:
            child = self._notify[event] = self.notify_bytes.labels(event)
        child.inc(size)

    def observe(self, event):
        """twisted.logger observer: the handovers and takeovers logged."""
        kind = event.get("event")
        if kind == "handover":
            self.handovers.inc()
        elif kind == "takeover":
            self.takeovers.inc()
            count = event.get("count")
            if isinstance(count, int) and count > 0:
                self.takeover_members.inc(count)

    def attach(self, focus):
        """Hand the metrics to ``focus``'s pieces (a ConferenceFocus whose
        ``attach`` ran: they exist from then on) and read its state."""
        if focus.audio is None:
            raise RuntimeError("the focus is not attached yet: start the stack first")
        focus.auth.metrics = self
        focus.notifier.metrics = self
        focus.audio.engine.metrics = self
        self.collect_from(focus.views, focus.audio.engine)

    def collect_from(self, views, engine):
        """Show ``views``' conferences and ``engine``'s RTP counts (once)."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = FocusCollector(views, engine, self.read)
        self.registry.register(self._collector)

    def resource(self):
        """The twisted.web resource of the exposition (prometheus_client's:
        a WSGI app in the reactor's thread pool, content negotiation and
        gzip included)."""
        from prometheus_client.twisted import MetricsResource  # imports the reactor
        return MetricsResource(self.registry)


class CallOutcomes:
    """``mfocus_calls_total``: a dialog-creating INVITE (no To tag) is one
    call, counted once, by the class of its first final response:
    answered (2xx), redirected (3xx: an agent's 302), refused (4xx and 6xx,
    a digest challenge and a CANCEL's 487 included) or failed (5xx).
    ``in``: INVITEs we received, the response we sent; ``out``: INVITEs we
    sent (dial-outs, handovers, takeovers, cascades, an agent's relayed
    calls), the response we received.  An INVITE never answered finally
    (timed out) is not counted.

    A call is known by its top Via (branch and sent-by: an INVITE, its
    retransmissions and its responses share it).  Retransmitted INVITEs and
    responses are not new calls: the calls answered lately are remembered
    (``LIMIT`` each, oldest forgotten first: bounded memory)."""

    LIMIT = 4096

    def __init__(self, counter):
        self.children = {(d, r): counter.labels(d, r)
                         for d in (IN, OUT) for r in set(RESULTS.values())}
        self.open = {}          # key -> direction: an INVITE awaiting its final response
        self.done = {}          # key -> None: calls answered lately (insertion order)

    @staticmethod
    def _key(message):
        try:
            via = message.top_via
        except SIPError:
            return None
        return None if via is None else hash((via.branch, via.host, via.port))

    def offered(self, invite, direction):
        key = self._key(invite)
        if key is None or key in self.open or key in self.done:
            return
        self.open[key] = direction
        if len(self.open) > self.LIMIT:
            del self.open[next(iter(self.open))]

    def answered(self, response, direction):
        key = self._key(response)
        if self.open.get(key) != direction:
            return              # not a call, a re-INVITE, or counted already
        del self.open[key]
        self.done[key] = None
        if len(self.done) > self.LIMIT:
            del self.done[next(iter(self.done))]
        self.children[direction, RESULTS[response.status // 100]].inc()


class FocusCollector:
    """What is read at scrape time, on the reactor's thread: per conference
    (focus/views.py, the API's read model) and the engine's RTP counts."""

    def __init__(self, views, engine, read):
        self.views, self.engine, self.read = views, engine, read

    def _snapshot(self):
        return list(self.views.gauges()), self.engine.rtp_totals()

    def describe(self):
        return self._families(([], (0, 0, {})))

    def collect(self):
        try:
            snapshot = self.read(self._snapshot)
        except queue.Empty:     # the reactor did not answer (stopping): no figures
            return []
        return self._families(snapshot)

    @staticmethod
    def _families(snapshot):
        rooms, (received, sent, dropped) = snapshot
        conferences = GaugeMetricFamily("mfocus_conferences", "Conferences at this focus")
        conferences.add_metric([], len(rooms))
        members = GaugeMetricFamily("mfocus_members", "Member endpoints of a conference, at "
                                    "every focus (the replicated view)", labels=["conference"])
        foci = GaugeMetricFamily("mfocus_foci", "Live foci of a conference",
                                 labels=["conference"])
        links = GaugeMetricFamily("mfocus_focus_links_up", "Other foci of a conference this "
                                  "focus is subscribed to, answering", labels=["conference"])
        for name, n_members, n_foci, n_links in rooms:
            members.add_metric([name], n_members)
            foci.add_metric([name], n_foci)
            links.add_metric([name], n_links)
        rtp_in = CounterMetricFamily("mfocus_rtp_packets_received", "RTP packets taken from "
                                     "parties", value=received)
        rtp_out = CounterMetricFamily("mfocus_rtp_packets_sent", "RTP packets sent to parties",
                                      value=sent)
        drops = CounterMetricFamily("mfocus_rtp_packets_dropped", "RTP and RTCP datagrams "
                                    "dropped, by reason (media/engine.py Drop)",
                                    labels=["reason"])
        for reason, n in sorted(dropped.items()):
            drops.add_metric([str(reason)], n)
        return [conferences, members, foci, links, rtp_in, rtp_out, drops]


def on_reactor(reactor, timeout=READ_TIMEOUT):
    """``read(f)``: ``f()`` run on ``reactor``'s thread, its result handed
    to the thread asking (a scrape's pool thread); on the reactor's own
    thread, at once.  ``queue.Empty`` after ``timeout`` seconds (the
    reactor is stopping: its pool waits for this thread)."""
    def read(f):
        if threadable.isInIOThread():
            return f()
        box = queue.SimpleQueue()

        def run():
            try:
                box.put((True, f()))
            except Exception as e:  # noqa: BLE001 (raised again in the asking thread)
                box.put((False, e))
        reactor.callFromThread(run)
        ok, value = box.get(timeout=timeout)
        if not ok:
            raise value
        return value
    return read


class MetricsService(service.Service):
    """Hands ``metrics`` to ``focus`` and listens to the log while running.
    Started after the SIPService (a MultiService starts its children in
    order), whose start attaches the focus: its pieces exist from then."""

    def __init__(self, metrics, focus, publisher=globalLogPublisher):
        self.metrics, self.focus, self.publisher = metrics, focus, publisher

    def startService(self):
        super().startService()
        self.metrics.attach(self.focus)
        self.publisher.addObserver(self.metrics.observe)

    def stopService(self):
        self.publisher.removeObserver(self.metrics.observe)
        return super().stopService()
