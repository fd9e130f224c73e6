"""Which foci this focus trusts (docs/design.md, "Trust").

A trusted focus may subscribe to a conference's multifocus state, forward
REFERs and open a cascade leg.  Trust is, for now, by address: a
configured peer, or a focus named in the state of a conference we share.
Datagrams come from the sender's listening port; stream connections from
any port, so those match on the host alone.
"""

__all__ = ["FocusTrust"]


class FocusTrust:
    """Decides whether a request's source is a trusted focus."""

    def __init__(self, node, rooms):
        self.node = node
        self.rooms = rooms

    def trusts(self, source):
        """Is the ``Peer`` ``source`` a focus we may act for?"""
        def match(focus):               # a focus id: sip:HOST:PORT
            host, _, port = focus.partition(":")[2].rpartition(":")
            return host.strip("[]") == source.host and (
                source.reliable or int(port) == source.port)
        if any(match(uri) for uri, _ in self.node.peers):
            return True
        return any(match(uri) for room in self.rooms for uri in room.foci())
