"""The notifier side of SIP events (RFC 6665 §4.2), for any event package.

One ``Notifier`` serves every subscription of the focus: members'
``Event: conference`` (RFC 4575) and the foci's multifocus package.  An
event package (``interfaces.IEventPackage``) says what a resource's state
is, what changed, and what each subscriber gets of it; ``resource`` may
raise ``Refused`` (e.g. 403 for an untrusted subscriber).

``contact(resource)`` gives the Contact the notifier puts in its messages.

Rules of this module:

- A subscription is a dialog usage (``request_received`` for refreshes).
  Its NOTIFYs go out in its dialog with a version of its own (RFC 4575
  §4.5: versions count per subscription, starting at 1).
- Changes are coalesced: ``changed(package, resource)`` schedules one
  flush per resource ``min_interval`` after the first change, so a burst
  of joins is one partial NOTIFY per subscriber, rendered once for all of
  them (RFC 6665 §4.2.2 rate control).
- A NOTIFY that fails (481, timeout, any error) ends the subscription
  (RFC 6665 §4.2.2).  Time is the injected clock.
- One NOTIFY in flight per subscription.  A later CSeq overtaking an
  earlier one makes the subscriber refuse the earlier (RFC 3261 §12.2.2),
  and a small NOTIFY over UDP overtakes a large one over TCP (§18.1.1) as
  soon as a conference is big.  What changes meanwhile waits and goes on
  the answer as one partial NOTIFY (``IEventPackage.merge``); past
  ``QUEUE_LIMIT`` waiting batches, as the full state.
- Nobody is made a reflector: over UDP a subscription's NOTIFYs go
  where its SUBSCRIBE came from: to its flow (a NAT: ``UserAgent.flow``),
  or to a next hop (a Record-Route or the Contact) of that host and port,
  else 403; nothing more goes until its first NOTIFY is answered with a
  2xx (one in flight, above).
- Bounded per source (budget.py): subscriptions held
  (``subscriptions_per_source``), NOTIFY bytes sent (a token bucket per
  subscriber address).  A change a subscriber cannot be sent now is not
  lost: it is *behind*, and gets the full state once its budget allows.
  The subscriptions between foci are not counted.
"""

import ipaddress


from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ..sip.dialog import Dialog, DialogError, uas_response_headers
from ..sip.uas import Refused, accepts
from .interfaces import IDialogUsage, IEventPackage

__all__ = ["Notifier", "Subscription"]


@implementer(IDialogUsage)
class Subscription:
    """One subscription dialog: expiry, version, NOTIFY sending."""

    def __init__(self, notifier, dialog, package, resource, expires, event_header,
                 source=None):
        self.notifier = notifier
        self.source = source            # where its SUBSCRIBE came from (a Peer)
        self.hold = None                # its source's budget for it (budget.Hold)
        self.in_flight = False          # a NOTIFY of it awaits its final response
        self.queued = []                # changes held back meanwhile, oldest first
        self.behind = False             # a change it was not sent: full state owed
        self.dialog = dialog
        self.package = package
        self.resource = resource
        self.event_header = event_header
        self.version = 0
        self.audience = None            # what the package lets this subscriber see
        self.active = expires > 0      # Expires: 0 is a fetch (§4.4.3): one NOTIFY
        self._expiry = None
        self.expires_at = notifier.ua.clock.seconds()
        if self.active:
            self._set_expiry(expires)

    @property
    def between_foci(self):
        """Our subscriber is a focus (the multifocus package)."""
        return self.package.between_foci

    def _set_expiry(self, seconds):
        clock = self.notifier.ua.clock
        self._stop_expiry()
        self.expires_at = clock.seconds() + seconds
        self._expiry = clock.callLater(seconds, self._expired)

    def _stop_expiry(self):
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def deactivate(self):
        """No more NOTIFYs after this; True if it was active."""
        was, self.active = self.active, False
        self._stop_expiry()
        return was

    def _expired(self):
        self._expiry = None
        self.terminate("timeout")

    def remaining(self):
        return max(0, int(round(self.expires_at - self.notifier.ua.clock.seconds())))

    # -- the dialog usage ------------------------------------------------

    def request_received(self, txn, request, source):
        notifier = self.notifier
        if request.method == "OPTIONS":         # a subscriber's keep-alive (§11)
            txn.respond(notifier.policy.respond(request, 200))
            return
        if request.method != "SUBSCRIBE":
            txn.respond(notifier.policy.respond(
                request, 405, headers=[("Allow", "SUBSCRIBE, OPTIONS")]))
            return
        try:
            self.dialog.receive_request(request)
        except DialogError as e:
            txn.respond(notifier.policy.respond(request, e.status, e.reason))
            return
        self.source = source
        if notifier.ua.flow(self.dialog, source) is None and _reflected(self.dialog, source):
            txn.respond(notifier.policy.respond(request, 403, REFLECTED))
            self.terminate("rejected")
            return
        try:
            expires = notifier.expires_of(request)
        except Refused as e:
            txn.respond(e.response(notifier.policy, request))
            return
        txn.respond(notifier.ok(request, self.dialog, expires, self.resource))
        if expires == 0:                        # unsubscribe (§4.2.1.4)
            self.terminate(None)
        else:                                   # refresh (§4.2.1.2): NOTIFY at once
            self._set_expiry(expires)
            self.update()

    # -- NOTIFY ------------------------------------------------------------

    def notify(self, rendered, final_reason=False):
        """Send ``rendered`` state; ``final_reason`` (a reason or None)
        makes it the terminating NOTIFY (RFC 6665 §4.2.2)."""
        self.version += 1
        if final_reason is False:
            state = f"active;expires={self.remaining()}"
        else:
            state = "terminated" + (f";reason={final_reason}" if final_reason else "")
        headers = [("Event", self.event_header), ("Subscription-State", state),
                   ("Contact", str(self.notifier.contact(self.resource))),
                   ("Content-Type", self.package.content_type)]
        body = rendered.with_version(self.version) if rendered is not None else b""
        request = self.dialog.create_request("NOTIFY", headers, body)
        if self.notifier.metrics is not None:
            self.notifier.metrics.notified(self.package.event, len(body))
        return self.notifier._send(self, request)

    def update(self, partial=None):
        """Send what changed (``partial``) or, without it or when behind, the
        full state, unless a NOTIFY of it awaits its answer (then it waits:
        ``answered``) or its budget does not allow (``Notifier.catch_up``)."""
        if self.in_flight:
            if partial is None or self.behind or len(self.queued) >= QUEUE_LIMIT:
                self.behind, self.queued = True, []
            else:
                self.queued.append(partial)
            return
        doc = None
        if partial is not None and not self.behind:
            doc = self.package.render_for(partial, self)
            if doc is None:
                return
        if doc is None:
            doc = self.package.state(self.resource, self)
        if not self.notifier.affords(self, doc):
            self.behind = True
            self.notifier.owe(self)
            return
        self.behind = False
        self.notify(doc)

    def answered(self):
        """Its NOTIFY got a 2xx: what waited goes now, merged into one."""
        queued, self.queued = self.queued, []
        if not self.active:
            return
        if self.behind:
            self.update()
        elif queued:
            self.update(queued[0] if len(queued) == 1 else self.package.merge(queued))

    def terminate(self, reason="noresource"):
        """End this subscription with a final NOTIFY carrying full state."""
        if not self.deactivate():
            return defer.succeed(None)
        d = self.notify(self.package.state(self.resource, self), final_reason=reason)
        self.notifier._forget(self)
        return d

    def __repr__(self):
        return f"<Subscription {self.package.event} {self.resource!r} {self.dialog.id}>"


class Notifier:
    """Accepts SUBSCRIBEs, keeps subscriptions, sends NOTIFYs (RFC 6665)."""

    log = Logger()

    def __init__(self, ua, policy, contact, packages=(), min_interval=0.2,
                 default_expires=3600, min_expires=60, max_expires=86400,
                 max_subscriptions=10000, budgets=None, notify_budgets=None,
                 on_unwatched=None):
        self.ua = ua
        #: budget.SourceBudgets: subscriptions held per source, and NOTIFY
        #: bytes per subscriber address (either may be None: no limit)
        self.budgets = budgets
        self.notify_budgets = notify_budgets
        self._owed = set()          # subscriptions behind for want of budget
        self._catch_up = None       # DelayedCall of catch_up
        #: on_unwatched(resource): its last subscription ended
        self.on_unwatched = on_unwatched
        self.policy = policy
        self.contact = contact
        self.packages = {}
        for package in packages:
            self.add_package(package)
        self.min_interval = min_interval
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.max_subscriptions = max_subscriptions
        self._by_resource = {}      # (event, resource) -> {Subscription}
        self._pending = {}          # (event, resource) -> DelayedCall
        self.count = 0
        #: metrics.Metrics, set at wiring time: the NOTIFY bytes sent
        self.metrics = None

    def add_package(self, package):
        if not IEventPackage.providedBy(package):
            raise TypeError(f"{package!r} does not provide IEventPackage")
        self.packages[package.event] = package

    @property
    def allow_events(self):
        return ", ".join(self.packages)

    # -- SUBSCRIBE outside a dialog (§4.2.1) --------------------------------

    def subscribe(self, txn, request, source):
        try:
            event, package, resource, audience, expires, dialog = self._admit(request, source)
            event_header = request.headers.get("event").strip()
            sub = Subscription(self, dialog, package, resource, expires, event_header,
                               source)
            sub.audience = audience
            if sub.active and not package.between_foci and self.budgets is not None:
                sub.hold = self.budgets.hold("subscriptions", source.host)
                if sub.hold is None:            # [limits] subscriptions_per_source
                    raise Refused(503, "Too Many Subscriptions From Your Address",
                                  headers=[("Retry-After", "60")])
            state = package.state(resource, sub)
            if not self.affords(sub, state):    # its address had its share of NOTIFYs
                if sub.hold is not None:
                    sub.hold.release()
                raise Refused(503, "Too Many Notifications",
                              headers=[("Retry-After", str(int(CATCH_UP)))])
        except Refused as e:
            txn.respond(e.response(self.policy, request))
            return
        txn.respond(self.ok(request, dialog, expires, resource))
        if not sub.active:                      # a fetch (§4.4.3)
            sub.notify(state, final_reason="timeout")
            return
        self.ua.add_dialog(dialog, sub)
        self._by_resource.setdefault((event, resource), set()).add(sub)
        self.count += 1
        sub.notify(state)                       # §4.2.1.2: NOTIFY at once
        package.subscribed(sub)

    def _admit(self, request, source):
        """What a new SUBSCRIBE asks for, checked in RFC 6665 §4.2.1.1 order;
        ``Refused`` says how to answer one we cannot accept."""
        event = (request.headers.get("event") or "").split(";", 1)[0].strip().lower()
        package = self.packages.get(event)
        if package is None:                     # RFC 6665 §7.2.2
            raise Refused(489, headers=[("Allow-Events", self.allow_events)])
        if not accepts(request, package.content_type):
            raise Refused(406, headers=[("Accept", package.content_type)])
        resource = package.resource(request, source)
        if resource is None:
            raise Refused(404, "No Such Conference", tagged=True)
        audience = package.audience(request, source, resource)
        expires = self.expires_of(request)
        if self.count >= self.max_subscriptions:
            raise Refused(503, "Too Many Subscriptions", headers=[("Retry-After", "60")])
        try:
            dialog = Dialog.from_uas(request)
        except DialogError as e:
            raise Refused(e.status, e.reason) from e
        if self.ua.flow(dialog, source) is None and _reflected(dialog, source):
            raise Refused(403, REFLECTED, tagged=True)
        return event, package, resource, audience, expires, dialog

    def expires_of(self, request):
        """The granted duration; ``Refused`` if it cannot be granted."""
        value = request.headers.get("expires")
        if value is None:
            return self.default_expires
        value = value.strip()
        if not value.isdigit():
            raise Refused(400, "Bad Expires header")
        seconds = int(value)
        if 0 < seconds < self.min_expires:      # §4.2.1.1: 423 with Min-Expires
            raise Refused(423, headers=[("Min-Expires", str(self.min_expires))])
        return min(seconds, self.max_expires)

    def ok(self, request, dialog, expires, resource):
        headers = uas_response_headers(request, dialog, self.contact(resource))
        headers.append(("Expires", str(expires)))
        return self.policy.respond(request, 200, to_tag=dialog.local_tag, headers=headers)

    # -- state changes -----------------------------------------------------

    def changed(self, package, resource):
        """``resource``'s state changed: a partial NOTIFY will follow."""
        key = (package.event, resource)
        if key in self._pending:
            return
        # Trailing edge: what changes within min_interval of the first
        # change goes out together, and flushes are min_interval apart.
        self._pending[key] = self.ua.clock.callLater(
            self.min_interval, self._flush, package, resource)

    def _flush(self, package, resource):
        key = (package.event, resource)
        self._pending.pop(key, None)
        rendered = package.changes(resource)
        if not rendered:
            return
        for sub in list(self._by_resource.get(key, ())):
            sub.update(rendered)

    # -- per-source NOTIFY budget -------------------------------------------

    def affords(self, sub, doc):
        """May ``doc`` go to ``sub``'s address now (and is it paid for)?"""
        if self.notify_budgets is None or sub.between_foci or sub.source is None:
            return True
        return self.notify_budgets.spend(sub.source.host, len(doc))

    def owe(self, sub):
        """``sub`` is behind: its full state goes when its budget allows."""
        self._owed.add(sub)
        if self._catch_up is None:
            self._catch_up = self.ua.clock.callLater(CATCH_UP, self.catch_up)

    def catch_up(self):
        self._catch_up = None
        owed, self._owed = self._owed, set()
        for sub in owed:
            if sub.active and sub.behind:
                sub.update()

    def watched(self, resource):
        """Has ``resource`` any subscription?  (One lookup per package: this
        runs whenever a call ends.)"""
        return any((event, resource) in self._by_resource for event in self.packages)

    def subscriptions(self, package=None, resource=None):
        out = []
        for (event, res), subs in self._by_resource.items():
            if (package is None or event == package.event) and (
                    resource is None or res is resource):
                out.extend(subs)
        return out

    def terminate_all(self, reason="noresource", resource=None):
        """End every subscription (of ``resource``); Deferred when every
        final NOTIFY was answered or failed."""
        ds = [sub.terminate(reason) for sub in self.subscriptions(resource=resource)]
        if resource is not None:
            for key in [k for k in self._pending if k[1] is resource]:
                self._pending.pop(key).cancel()
        return defer.DeferredList(ds, consumeErrors=True)

    # -- plumbing ----------------------------------------------------------

    def _send(self, sub, request):
        done = defer.Deferred()

        def on_response(response):
            if response.status < 200:
                return
            sub.in_flight = False
            if response.status < 300:
                sub.answered()
            else:
                self.log.info("NOTIFY to {dialog} got {status}: subscription ended",
                              dialog=sub.dialog.call_id, status=response.status)
                self._end(sub)
            if not done.called:
                done.callback(response.status)

        def on_error(reason):
            sub.in_flight = False
            self.log.info("NOTIFY to {dialog} failed: {why}", dialog=sub.dialog.call_id,
                          why=reason)
            self._end(sub)
            if not done.called:
                done.callback(None)

        sub.in_flight = True
        d = self.ua.send_request(request, on_response, on_error,
                                 self.ua.flow(sub.dialog, sub.source), to_focus=sub.between_foci)
        d.addErrback(lambda f: on_error(f.getErrorMessage()))
        return done

    def _end(self, sub):
        if sub.deactivate():
            self._forget(sub)

    def _forget(self, sub):
        if sub.hold is not None:
            sub.hold.release()
            sub.hold = None
        self._owed.discard(sub)
        key = (sub.package.event, sub.resource)
        subs = self._by_resource.get(key)
        if subs and sub in subs:
            subs.discard(sub)
            self.count -= 1
            if not subs:
                del self._by_resource[key]
                if self.on_unwatched is not None:
                    self.on_unwatched(sub.resource)
        self.ua.remove_dialog(sub.dialog, sub)


REFLECTED = "Contact Is Not Where The SUBSCRIBE Came From"
CATCH_UP = 1.0              # seconds between tries to send what is owed
#: batches of changes a subscription holds while its NOTIFY is in flight;
#: beyond, it is sent the full state on the answer instead
QUEUE_LIMIT = 32


def _reflected(dialog, source):
    """Would this dialog's requests over UDP go anywhere but the source of
    the SUBSCRIBE (another host or port)?  Then a forged SUBSCRIBE would
    make us send NOTIFYs to a third party.  Over a stream the peer has
    answered a handshake already."""
    if source is None or source.reliable:
        return False
    hop = dialog.route_set[0].uri if dialog.route_set else dialog.remote_target
    if hop is None or "maddr" in hop.params:
        return True
    if (hop.params.get("transport") or "udp").lower() != "udp":
        return False
    try:
        host = ipaddress.ip_address(hop.host.strip("[]"))
        return host != ipaddress.ip_address(source.host) or \
            (hop.port or 5060) != source.port
    except ValueError:          # a name: not where it came from, as far as we know
        return True

