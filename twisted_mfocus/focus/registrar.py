"""The conference URI survives its primary: a binding at a registrar.

Mechanism (docs/design.md, "Failover"): the conference URI is
``sip:NAME@DOMAIN`` where DOMAIN (``[focus] domain``) is a standard
registrar and proxy in front of the foci (Kamailio in the tests).  The
primary registers each conference URI it creates as an address-of-record
with its own Contact (RFC 3261 §10); requests to the conference URI reach
whoever holds the binding.  When the primary fails, its successor (the same
deterministic rule as takeover, failover.py) registers its own Contact and
removes the dead primary's (``expires=0`` on that Contact, §10.2.2), so new
INVITEs, SUBSCRIBEs and REFERs to the conference URI reach the new primary.
Only SIP and a standard registrar are needed: no DNS changes, no shared
storage.  A focus that stops being primary (it comes back after being
taken for failed) stops refreshing; its successor removed its Contact.

Each binding is refreshed at half its expiry with the same Call-ID and a
rising CSeq (§10.2.4); a failed REGISTER is retried after ``RETRY`` seconds.
"""

from twisted.logger import Logger

from ..sip.headers import Headers
from ..sip.ids import new_call_id, new_tag
from ..sip.message import MAX_FORWARDS, Request
from ..sip.uri import URI
from ..sip.values import NameAddr

__all__ = ["Registrar", "Binding"]

EXPIRES = 300       # seconds asked for each binding
RETRY = 5.0         # seconds before a failed REGISTER is tried again


def contact_of(focus_uri, name):
    """The Contact a focus registers for conference ``name``: the
    conference's user at the focus's address."""
    return URI.parse(focus_uri).replace(user=name, params={}, headers=[])


class Binding:
    """Our registration of one conference URI."""

    log = Logger()

    def __init__(self, registrar, room, remove=()):
        self.registrar = registrar
        self.aor = room.uri
        self.contact = contact_of(registrar.node.uri, room.name)
        self.remove = [contact_of(uri, room.name) for uri in remove]
        self.call_id = new_call_id()
        self.tag = new_tag()
        self.cseq = 0
        self.timer = None
        self.active = False

    def start(self):
        self.active = True
        self._register(EXPIRES)

    def stop(self):
        """Stop refreshing and remove our Contact."""
        if self.active:
            self.active = False
            self._cancel()
            self._register(0)

    def abandon(self):
        """Stop refreshing without touching the registrar: another focus
        took the binding over (and removed our Contact)."""
        self.active = False
        self._cancel()

    def _register(self, expires):
        self.cseq += 1
        h = Headers()
        h.add("Max-Forwards", MAX_FORWARDS)
        h.add("From", str(NameAddr(self.aor, params={"tag": self.tag})))
        h.add("To", str(NameAddr(self.aor)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", str(NameAddr(self.contact, params={"expires": str(expires)})))
        for stale in self.remove if expires else ():
            h.add("Contact", str(NameAddr(stale, params={"expires": "0"})))
        h.add("Expires", str(expires))
        request = Request("REGISTER", self.registrar.uri, h)

        def answered(response):
            if response.status < 200:
                return
            if response.status < 300:
                self.remove = []            # the stale Contacts are gone
                if expires and self.active:
                    self._later(expires / 2)
                self.log.info("{aor}: registered {contact} ({expires} s)", aor=str(self.aor),
                              contact=str(self.contact), expires=expires, event="registered")
            else:
                failed(f"{response.status} {response.reason}")

        def failed(reason):
            self.log.info("{aor}: REGISTER failed: {why}", aor=str(self.aor), why=reason)
            if expires and self.active:
                self._later(RETRY)
        self.registrar.ua.send_request(request, answered, failed).addErrback(
            lambda f: failed(f.getErrorMessage()))

    def _later(self, delay):
        self._cancel()
        self.timer = self.registrar.ua.clock.callLater(delay, self._refresh)

    def _refresh(self):
        self.timer = None
        if self.active:
            self._register(EXPIRES)

    def _cancel(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class Registrar:
    """Makes the bindings of the conference URIs this focus is primary of;
    each room keeps its own (``Room.binding``)."""

    def __init__(self, ua, node, uri):
        self.ua = ua
        self.node = node
        self.uri = URI.parse(uri) if isinstance(uri, str) else uri

    def register(self, room, remove=()):
        """Bind ``room``'s URI to us, removing ``remove`` foci's Contacts."""
        if room.binding is not None:    # a binding we had stops refreshing
            room.binding.abandon()
        room.binding = Binding(self, room, remove)
        room.binding.start()
