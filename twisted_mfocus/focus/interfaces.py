"""The contracts between the focus's pieces, declared with zope.interface.

The UA core routes an in-dialog request to whatever owns the dialog, and
the notifier serves any event package: both only know these interfaces,
never the classes behind them (a call leg, a subscription, a REFER's
implicit subscription; the conference and multifocus packages).  The
pieces of one conference (its calls, mesh, failover, delegations,
cascades, REFERs) reach the rest of it only through ``IRoom``: room.py
imports them, they never import it.
"""

from zope.interface import Attribute, Interface

__all__ = ["IDialogUsage", "IEventPackage", "IRoom"]


class IDialogUsage(Interface):
    """What owns a dialog in ``UserAgent.dialogs`` (RFC 5057 calls it a
    *dialog usage*): every request inside the dialog is handed to it."""

    between_foci = Attribute(
        "True when the other end is a focus: every request in the dialog must "
        "prove it comes from one (trust.py), and ours carry our proof")

    def request_received(txn, request, source):
        """A request of this dialog arrived in server transaction ``txn``
        from the ``Peer`` ``source``; answer it through ``txn``."""


class IEventPackage(Interface):
    """An RFC 6665 event package the ``Notifier`` serves (§7: what a
    package must define: its event name, its body, what a subscription
    names and what it is told)."""

    event = Attribute("the Event header's package name, lower case")
    between_foci = Attribute("True when the subscribers are foci")
    content_type = Attribute("the MIME type of the NOTIFY bodies")

    def resource(request, source):
        """The resource a new SUBSCRIBE names, or None (404); may raise
        ``sip.uas.Refused`` to answer it otherwise (e.g. 403)."""

    def audience(request, source, resource):
        """What the subscriber of this SUBSCRIBE may see of ``resource`` (kept
        as ``subscription.audience``); may raise ``Refused``."""

    def state(resource, subscription):
        """The full state of ``resource`` for ``subscription``, rendered
        (``.with_version(v)``)."""

    def changes(resource):
        """What changed since the last call, or None when nothing did."""

    def render_for(changes, subscription):
        """What one subscriber gets of ``changes`` (None: nothing)."""

    def merge(changes_list):
        """One ``changes`` standing for several, oldest first: what a
        subscriber missed while its last NOTIFY awaited its answer."""

    def subscribed(subscription):
        """A new subscription was accepted (after its first NOTIFY)."""


class IRoom(Interface):
    """One conference at this focus, as its own pieces see it (room.py)."""

    name = Attribute("the conference's name (the user part of its URI)")
    uri = Attribute("the conference URI (a sip.uri.URI)")
    name_addr = Attribute("the conference URI as a NameAddr")
    conference = Attribute("the RFC 4575 model members see (conference.model)")
    legs = Attribute("the members' call legs held here (not cascade legs)")
    media_address = Attribute("the address our SDP offers for RTP")

    def contact(transport="UDP"):
        """Our Contact for the conference over ``transport``, with isfocus."""

    # what a call leg reports
    def leg_joined(leg):
        """``leg``'s dialog is confirmed: a member (or a cascade) is in."""

    def leg_changed(leg):
        """A re-INVITE changed ``leg``'s media."""

    def leg_ended(leg, why, was_member):
        """``leg`` is over, for ``why``; ``was_member``: it was confirmed."""

    def refer(txn, request, source, leg=None):
        """A REFER for the conference, in ``leg``'s dialog or outside one."""

    # what the mesh, failover and delegations ask
    def publish_members():
        """The model changed: a partial NOTIFY to the members' subscribers."""

    def publish_state():
        """Our partition changed: a NOTIFY to the foci subscribed to us."""

    def link_up(peer):
        """Our subscription to focus ``peer`` is up."""

    def link_down(peer):
        """Focus ``peer`` is gone for this conference."""

    def foci_changed():
        """Some focus record of the replicated state arrived or changed."""

    def hand_over(leg, mode):
        """Move ``leg``'s member to another focus (a delegation.HandOver mode)."""

    def handed_off(leg):
        """Another focus took ``leg``'s member: its place here is free."""

    def forward(target, referred_by, forwarded, report):
        """Pass a REFER on to a focus with room (``forwarded``: its marker)."""

    def room_elsewhere():
        """Has another focus room for one more member?"""

    def dial_out(target, referred_by, report, replaces=None, adopt=None, to=None,
                 srtp_profile=None):
        """Dial ``target`` into the conference; the new leg, or None."""

    def remove_legs(legs, report):
        """End ``legs`` with BYE; ``report(200, "OK")`` at the first answer."""

    def became_primary(predecessor):
        """We succeed ``predecessor`` as primary: the URI's binding is ours."""

    def no_longer_primary():
        """Another focus holds the conference URI now."""

    def set_muted(leg, muted):
        """Keep ``leg``'s voice out of the mix, or put it back."""

    def digit_received(leg, digit):
        """A digit from ``leg`` (RFC 4733 or SIP INFO): its PIN, or ``*6``."""

    def is_member_user(user):
        """Is the authenticated ``user`` a member of the conference?"""

    def legs_of(uri):
        """The live legs of member ``uri`` (user or endpoint URI)."""

    def holder_of(uri):
        """The id of the focus holding member ``uri``, or None."""
