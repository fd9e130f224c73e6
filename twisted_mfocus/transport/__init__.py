"""The Twisted edge of the SIP stack: UDP, TCP and TLS (RFC 3261 §18) and
server location (RFC 3263).

- ``layer.TransportLayer``: listeners, senders, connection reuse, bounds.
- ``stream``/``udp``: the protocol objects that only move bytes.
- ``tls.TLSSettings``: server and verifying client contexts.
- ``resolver.Resolver``: RFC 3263 ``locate(uri)`` on ``twisted.names``,
  with a TTL-honouring cache.

The rules themselves (what to stamp, where a response goes, which SRV
names to ask) are sans-IO functions in ``twisted_mfocus.sip.routing``.
"""

from .errors import TransportError
from .layer import TransportLayer, parse_listen_spec
from .resolver import LocateError, Resolver
from .tls import TLSSettings

__all__ = ["TransportLayer", "TransportError", "Resolver", "LocateError",
           "TLSSettings", "parse_listen_spec"]
