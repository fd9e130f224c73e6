"""This focus among foci: its id, its settings, its load, whether it stops.

Every piece that acts for a conference needs a few facts about the focus
it runs on, never the focus itself: the ``Node`` holds them.  Load is
counted here as calls come and go (rooms report them), so asking for it
costs nothing however many conferences there are.
"""

from ..media import srtp
from ..sip.uri import URI

__all__ = ["Node", "focus_id"]

SIP_PORT, SIPS_PORT = 5060, 5061     # RFC 3261 §19.1.2 default ports


def focus_id(uri):
    """A focus's id: ``sip:host:port`` of its URI (user and params dropped)."""
    if isinstance(uri, str):
        uri = URI.parse(uri)
    host = f"[{uri.host.strip('[]')}]" if ":" in uri.host else uri.host
    port = uri.port or (SIPS_PORT if uri.scheme == "sips" else SIP_PORT)
    return f"{uri.scheme}:{host}:{port}"


class Node:
    """The focus-wide facts a conference's pieces use."""

    def __init__(self, config):
        self.config = config
        self.role = config.role
        #: the configured foci, as (focus id, URI to SUBSCRIBE)
        self.peers = [(focus_id(uri), uri) for uri in config.peers]
        #: when a call is SRTP ([media] srtp, sdes_over_cleartext)
        self.srtp = srtp.Policy(srtp.Mode(config.srtp), config.sdes_over_cleartext)
        self.stopping = False
        self._ua = None
        self._uri = None
        self._calls = 0             # member calls held
        self._handed_off = 0        # of which another focus holds the member now

    def attach(self, ua):
        """The UA core that knows our listeners (they open after this)."""
        self._ua = ua

    @property
    def uri(self):
        """Our id among foci (the API's ``focus`` of each member):
        ``sip:host:port`` of our UDP listener, whatever the domain."""
        if self._uri is None:
            host, port = self._ua.local_hostport("UDP")
            self._uri = focus_id(URI("sip", host=host, port=port))
        return self._uri

    @property
    def tls(self):
        """``host:port`` of our TLS listener, None without one: where a
        cascade carrying SRTP keys reaches us (cascade.py)."""
        found = self._ua.transport.local_address("TLS")
        if found is None:
            return None
        host, port = found
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def domain_host(self):
        """The host of ``domain``, without its port or IPv6 brackets."""
        domain = self.domain
        if domain.startswith("["):                  # [IPv6] or [IPv6]:port
            return domain[1:].partition("]")[0]
        return domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain

    @property
    def domain(self):
        """The host part of the conference URIs we make (``[focus] domain``,
        else our UDP listener)."""
        if self.config.domain:
            return self.config.domain
        host, port = self._ua.local_hostport("UDP")
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{port}"

    @property
    def capacity(self):
        return self.config.capacity

    @property
    def load(self):
        """Calls held, not counting calls already handed to another focus
        (they only wait for the phone, or ``handover_grace``, to end)."""
        return self._calls - self._handed_off

    def is_full(self):
        return self.load >= self.config.capacity

    def within_overflow(self):
        """Room for one more beyond capacity, to be handed on (``overflow``)?"""
        return self.load < self.config.capacity + self.config.overflow

    # -- what rooms report ---------------------------------------------------

    def call_added(self):
        self._calls += 1

    def call_handed_off(self):
        self._handed_off += 1

    def call_removed(self, handed_off):
        self._calls -= 1
        if handed_off:
            self._handed_off -= 1
