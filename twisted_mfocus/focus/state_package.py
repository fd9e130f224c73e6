"""The ``inet-ci-multifocus-ext`` event package (docs/design.md, "Consistency
model"), as the ``Notifier`` serves it to the foci subscribed to us: full
documents carry a snapshot of the replicated state, partial ones the
deltas each subscriber still needs (mesh.py writes them).
"""

from zope.interface import implementer

from ..conference import info, multifocus
from ..sip.uas import Refused
from .interfaces import IEventPackage
from .node import focus_id

__all__ = ["Batch", "MultifocusPackage"]


@implementer(IEventPackage)
class MultifocusPackage:
    """``inet-ci-multifocus-ext`` for the ``Notifier``: full documents carry
    a snapshot, partial ones the deltas each subscriber still needs.  Its
    resources are rooms (room.py)."""

    event = multifocus.EVENT
    content_type = multifocus.CONTENT_TYPE
    between_foci = True         # its subscribers are foci (trust.py)

    def __init__(self, trust, rooms, agent=None):
        self.trust = trust
        self.rooms = rooms
        self.agent = agent          # agent.Agent in agent mode: recruitment

    def resource(self, request, source):
        """Only a trusted focus may subscribe (docs/design.md, "Trust"), or,
        at an agent, a conference its user is in (agent.py, "Recruitment")."""
        uri = request.to.uri
        room = self.rooms.get(uri.user) if uri.is_sip and uri.user else None
        if self.trust.trusts(request, source, room):
            return self.rooms.for_focus(request)
        if self.agent is None or room is not None:
            raise Refused(403, "Not A Trusted Focus", tagged=True)
        key = self.agent.recruited(request, source, self.rooms)
        room = self.rooms.for_focus(request)
        if room is not None:
            self.trust.adopt_key(room, key)
        return room

    def audience(self, request, source, room):
        return None                 # a proven focus sees everything

    def state(self, room, subscription):
        """The snapshot, without RFC 4575 <users>: the snapshot's members
        are the same people, and both made a 2,000-member document pass the
        1 MiB body bound (sip/message.py ``Limits``)."""
        return info.render_full(room.conference, users=False, extra=multifocus.render_snapshot(
            room.mesh.replica.snapshot()))

    def changes(self, room):
        return room.mesh.take_batch()

    def render_for(self, batch, sub):
        return batch.render_for(focus_id(sub.dialog.remote_uri.uri))

    def merge(self, batches):
        """The deltas of every batch, in order."""
        return Batch(batches[-1].mesh, [item for b in batches for item in b.items])

    def subscribed(self, sub):
        """A focus subscribed to us: subscribe back (the mesh)."""
        sub.resource.mesh.connect(focus_id(sub.dialog.remote_uri.uri))


class Batch:
    """Deltas gathered for one flush, each with the focus it came from."""

    def __init__(self, mesh, items):
        self.mesh = mesh
        self.items = items
        self._rendered = {}

    def __bool__(self):
        return bool(self.items)

    def render_for(self, subscriber):
        """The partial document ``subscriber`` needs: only the deltas it does
        not hear from their writer directly, and no RFC 4575 <users> (the
        deltas carry the members; repeating them doubled every NOTIFY)."""
        replica = self.mesh.replica
        keep = tuple(i for i, (delta, source) in enumerate(self.items)
                     if replica.relay_targets(delta, [subscriber], source))
        if not keep:
            return None
        rendered = self._rendered.get(keep)
        if rendered is None:
            extra = multifocus.render_deltas([self.items[i][0] for i in keep])
            rendered = self._rendered[keep] = info.render_partial(
                self.mesh.conference, None, extra=extra)
        return rendered
