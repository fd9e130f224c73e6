"""The SIP stack as a Twisted service: transports → transactions → TU.

This is the one place the layers meet.  Messages flow up:
``TransportLayer`` (parse, validate, stamp Via) → ``TransactionLayer``
(match, absorb retransmissions, run timers) → the transaction user (the
focus).  Bad input is answered here, statelessly, when a response can be
formed (RFC 3261 §8.2.6, RFC 4475), and logged once.  Every message in and
out passes here, so here it is counted (``metrics``, metrics.py).
"""

import gc
import os
import resource

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from .budget import Verdict, request_budgets
from .focus.probe import ProbeUAS
from .logbudget import LogBudget
from .sip.address import Peer
from .sip.errors import ParseError
from .sip.headers import split_list
from .sip.ids import new_tag
from .sip.values import Via
from .sip.message import Request, Response, make_response
from .sip.transaction import TransactionLayer, Timers
from .transport import TransportLayer

__all__ = ["SIPService", "ListenError"]

FD_RESERVE = 64         # descriptors kept for listeners, the API, logs, DNS
MIN_CONNECTIONS = 16


class ListenError(Exception):
    """A configured listener could not be opened."""


class SIPService(service.Service):
    """Listens, and wires the transport, transaction and TU layers."""

    log = Logger()

    def __init__(self, reactor, config, tu=None, metrics=None):
        self.reactor = reactor
        self.config = config
        self.tu = tu or ProbeUAS()       # an ITransactionUser
        self.metrics = metrics           # metrics.Metrics, or None: nothing counted
        self.transport = None
        self.transactions = None
        self.listening = []
        self.bad_log = LogBudget(reactor.seconds)   # bad input: a line per source per minute
        self.rate_log = LogBudget(reactor.seconds)  # sources over their request budget
        #: what each source may ask and hold ([limits]; the TU counts holdings)
        self.budgets = request_budgets(config, reactor.seconds)
        # A leaving focus first hands its members over (leave_timeout).
        self.shutdown_grace = config.leave_timeout + 5.0

    def startService(self):
        super().startService()
        _tune_gc()
        cfg = self.config
        self.transport = TransportLayer(
            self.reactor, self._message_received, self._bad_message,
            tls=_tls_settings(cfg), max_connections=self._connection_ceiling(),
            max_per_source=cfg.connections_per_source,
            idle_timeout=cfg.idle_timeout, message_timeout=cfg.message_timeout,
            on_transport_error=self._transport_error)
        self.transactions = TransactionLayer(
            self.reactor, self._send, self.tu,
            timers=Timers(T1=cfg.t1, T2=cfg.t2, T4=cfg.t4),
            max_transactions=cfg.max_transactions)
        self.tu.attach(self)
        self.ready = defer.gatherResults(
            [self._listen(spec) for spec in cfg.listen], consumeErrors=True)
        self.ready.addCallback(self._listening)
        self.ready.addErrback(self._listen_failed)

    def _connection_ceiling(self):
        """``max_connections``, kept below the file descriptors this process
        may open (RLIMIT_NOFILE, its soft limit raised to the hard one):
        each call holds an RTP and an RTCP socket, and a reserve stays for
        the listeners, the API and the logs, so UDP, RTP and the API go on
        when TCP is full."""
        cfg = self.config
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        calls = cfg.capacity + cfg.overflow
        reserve = FD_RESERVE + 2 * calls
        ceiling = max(MIN_CONNECTIONS, min(cfg.max_connections, soft - reserve))
        if ceiling < cfg.max_connections:
            self.log.warn("at most {n} TCP/TLS connections (file descriptors: {fds}; "
                          "{calls} calls need two each): raise LimitNOFILE for more",
                          n=ceiling, fds=soft, calls=calls)
        return ceiling

    def _listen(self, spec):
        def name_it(failure):
            raise ListenError(f"cannot listen on {spec}: {failure.getErrorMessage()}")
        return self.transport.listen(spec).addErrback(name_it)

    def _listening(self, addresses):
        self.listening = addresses
        for spec in addresses:
            self.log.info("mfocus listening on {spec}", spec=str(spec))
        return addresses

    def _listen_failed(self, failure):
        """A listener we were told to open is unavailable: say which and why
        in one line, and exit with status 1 (systemd's Restart=on-failure)."""
        failure.trap(defer.FirstError)
        self.log.critical("{error}", error=failure.value.subFailure.getErrorMessage())
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.callLater(0, self.reactor.stop)

    def stopService(self):
        """End calls and subscriptions (the TU's ``shutdown``), waiting at
        most ``shutdown_grace`` seconds for their answers, then close."""
        super().stopService()
        if self.transport is None:
            return None
        d = defer.maybeDeferred(self.tu.shutdown)
        d.addTimeout(self.shutdown_grace, self.reactor)
        d.addErrback(lambda f: self.log.info("shutdown: gave up waiting ({why})",
                                             why=f.getErrorMessage()))
        d.addCallback(lambda _: self.transport.stop())
        return d

    # -- glue ------------------------------------------------------------

    def _send(self, message, peer):
        if isinstance(message, Response):
            self.transport.send_response(message, peer)
        else:
            self.transport.send(message, peer)
        if self.metrics is not None:
            self.metrics.sent(message)

    def _transport_error(self, message, peer, error):
        """A failure found after ``send`` returned (refused, TLS) (§17.1.4)."""
        self.transactions.transport_error(message, peer, error)

    def _message_received(self, message, source):
        if self.metrics is not None:
            self.metrics.received(message)
        if isinstance(message, Request):
            verdict = self.budgets.request(source.host)
            if verdict is not Verdict.ADMIT and not self.tu.exempt(message, source):
                self._over_budget(message, source, verdict)
                return
        self.transactions.receive(message, source)

    def _over_budget(self, request, source, verdict):
        """A source beyond ``[limits] requests_per_second``: one 503 with
        Retry-After a second (RFC 3261 §21.5.4), silence otherwise, before
        any transaction exists; a line per episode, at most one a minute."""
        budgets = self.budgets
        if budgets.episode and self.rate_log.admit(source.host) is not None:
            self.log.info("{peer} is over its request budget ({rate:g}/s, burst {burst}): "
                          "503, then dropped", peer=source.host, rate=budgets.rate,
                          burst=budgets.burst)
        if verdict is not Verdict.REFUSE or request.method == "ACK":
            return
        response = make_response(request, 503, "Too Many Requests", to_tag=new_tag(), headers=[
            ("Retry-After", str(budgets.retry_after))])
        self._stateless(self.transport.send_response, response, source, source)

    def _bad_message(self, error, source):
        """Answer what can be answered (RFC 4475 §3.1.2); drop the rest.
        Logged once per source per minute (logbudget.py), with a count."""
        msg = error.message
        if self.metrics is not None:
            self.metrics.bad_message()
        admitted = self.bad_log.admit(source.host)
        if admitted is not None:
            who, suppressed = admitted
            self.log.info("bad message from {peer}: {status} {reason}{more}",
                          peer=str(source) if who == source.host else who,
                          status=error.status, reason=error.reason,
                          more=f" ({suppressed} more not logged)" if suppressed else "")
        if not isinstance(msg, Request) or msg.method == "ACK":
            return   # a response or an ACK is never answered (§17.1.1.3)
        if not msg.headers.lines("via"):
            return   # nowhere to send a response
        response = make_response(msg, error.status, error.reason)
        self._stateless(self.transport.send, response, _error_destination(msg, source), source)

    def _stateless(self, send, response, dest, source):
        """Send a response no transaction keeps (``send``: the transport's
        ``send`` or ``send_response``); if the transport refuses, that is all."""
        try:
            send(response, dest)
        except Exception as e:
            self.log.info("cannot answer {peer}: {error}", peer=str(source), error=e)
            return
        if self.metrics is not None:
            self.metrics.sent(response)


def _error_destination(request, source):
    """Where a response to a request that failed validation goes.

    RFC 3261 §18.2.2 with §18.2.1's ``received`` taken as the source address
    (it is, whenever the sent-by host differs from it, and the request may
    name a host we must not resolve): over a stream, the connection it came
    on; over UDP, the source IP and the Via port (the source port with
    RFC 3581 ``rport``).  A top Via that does not parse leaves only the
    source address and port.
    """
    if source.reliable:
        return source
    try:
        via = Via.parse(split_list(request.headers.lines("via")[0])[0])
    except (ParseError, IndexError):
        return source
    if via.rport is not None:
        return source
    return Peer(source.transport, source.host, via.sent_by[1])


def _tune_gc():
    """Make CPython's cyclic GC fit a server holding ~10^5 live transactions.

    Completed transactions wait 32 s (Timers J, H, L, M) holding their
    messages: at thousands of requests per second that is millions of
    tracked objects, and with the default thresholds (700, 10, 10) the
    collector walks them so often that it costs more than SIP processing.
    The objects die by timer, not by cycles, so collect young objects less
    often, and move what exists at start-up out of the collector's sight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _tls_settings(cfg):
    if not cfg.tls_certificate:
        return None
    return {"certificate": cfg.tls_certificate, "key": cfg.tls_key, "ca": cfg.tls_ca}
