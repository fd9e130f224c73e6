"""The transport's error type.

There is one ``TransportError`` in the project: the transaction layer's
(``sip/transaction.py``), raised by ``send`` when a failure is known at
once and passed to ``on_transport_error`` when it is found later.
"""

from ..sip.transaction import TransportError

__all__ = ["TransportError"]
