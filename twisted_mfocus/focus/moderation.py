"""What an operator does to a conference through the management API
(issue 20): mute and unmute a member, mute or unmute everyone but one,
kick a member, lock and unlock the room, end the conference.

Every operation answers ``(HTTP status, JSON body)`` for ``web/api.py``
and acts only on what this focus holds: a member held by another focus is
answered 409 naming that focus (forwarding the operation to it is not
built yet), and ``mute_all`` lists those members as ``elsewhere``.

The lock lives in one place, the room's policy (``room.policy.locked``,
the ``[room:NAME] locked`` of config.py): the one admission check of a
new caller (``ConferenceFocus._admits``) already refuses it there with
403 "Conference Locked".  403, not 486 or 480: the room is not busy nor
the callee away, the server understood the request and will not admit
it (RFC 3261 §21.4.4), and retrying does not help until an operator
unlocks.  Members already in stay; a member's call replacing its own
(Replaces: a handover, a takeover, a transfer) is no new caller and is
not refused.  The lock belongs to the conference: it lasts until unlock
or until the room is retired (nobody in it, nobody watching; a
configured ``locked = yes`` room is locked again when it is made anew).
"""

from twisted.logger import Logger

from ..sip.errors import SIPError
from ..sip.uri import URI

__all__ = ["Moderation"]

#: RFC 6665 §4.2.2: the state watched no longer exists (the conference ended)
ENDED_REASON = "noresource"


class Moderation:
    """The operator's actions on the conferences of ``rooms`` (room.Rooms)."""

    log = Logger()

    def __init__(self, rooms):
        self.rooms = rooms

    # -- one member -----------------------------------------------------------

    def set_muted(self, name, member, muted):
        """Mute or unmute ``member`` (a URI, as text) of conference ``name``:
        its voice is kept out of the mix, as ``*6`` does.  404 for no such
        conference or member, 400 for a member that is no SIP URI, 409
        naming the focus that holds a member of another focus."""
        room, legs, refusal = self._member_legs(name, member, lambda leg: not leg.handed_off)
        if refusal is not None:
            return refusal
        for leg in legs:
            room.set_muted(leg, muted)
        return 200, {"uri": member, "muted": muted}

    def kick(self, name, member):
        """End ``member``'s calls held here with BYE (RFC 3261 §15.1.1):
        ``{"uri", "calls"}``; the errors of ``set_muted``."""
        room, legs, refusal = self._member_legs(name, member, lambda leg: leg.is_ours)
        if refusal is not None:
            return refusal
        self.log.info("{conf}: {member} {event} by the operator ({n} calls)", event="kicked",
                      conf=room.name, member=member, n=len(legs))
        for leg in legs:
            leg.hangup()
        return 200, {"uri": member, "calls": len(legs)}

    def _member_legs(self, name, member, which):
        """(room, ``member``'s legs of conference ``name`` that ``which``
        keeps, None) or (…, …, the (status, body) refusing the request)."""
        room = self.rooms.get(name)
        if room is None:
            return None, [], (404, {"error": "no such conference"})
        uri = _sip_uri(member)
        if uri is None:
            return room, [], (400, {"error": f"not a SIP URI: {member}"})
        legs = [leg for leg in room.legs_of(uri) if which(leg)]
        if legs:
            return room, legs, None
        holder = room.holder_of(member)
        if holder and holder != room.services.node.uri:
            return room, [], (409, {"error": "held by another focus", "focus": holder})
        return room, [], (404, {"error": "no such member"})

    # -- everyone ---------------------------------------------------------------

    def mute_all(self, name, muted, spare=None):
        """Mute (or unmute) every member held here but ``spare`` (a URI,
        as text: its user or one endpoint): ``{"name", "muted", "except",
        "members", "elsewhere"}``, ``members`` the URIs now so, ``elsewhere``
        the members of other foci, untouched (``{"uri", "focus"}``).  404
        for no such conference, or a ``spare`` that is no member anywhere
        (a typo must not mute the speaker); 400 for one that is no SIP URI."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        spared = ()
        if spare is not None:
            uri = _sip_uri(spare)
            if uri is None:
                return 400, {"error": f"not a SIP URI: {spare}"}
            spared = room.legs_of(uri)
            if not spared and room.holder_of(spare) is None:
                return 404, {"error": f"no such member: {spare}"}
        changed = []
        for leg in room.legs:
            if leg.is_ours and leg not in spared:
                room.set_muted(leg, muted)
                changed.append(leg.user_entity)
        us = room.services.node.uri
        elsewhere = sorted({(record.user, holder)
                            for holder, record in room.mesh.replica.members().values()
                            if holder != us})
        self.log.info("{conf}: {event} by the operator ({n} members{but})", conf=room.name,
                      event="everyone muted" if muted else "everyone unmuted", n=len(changed),
                      but=f", not {spare}" if spare else "")
        return 200, {"name": room.name, "muted": muted, "except": spare,
                     "members": sorted(set(changed)),
                     "elsewhere": [{"uri": uri, "focus": focus} for uri, focus in elsewhere]}

    # -- the room -----------------------------------------------------------------

    def set_locked(self, name, locked):
        """Lock (or unlock) conference ``name``: ``{"name", "locked"}``; 404
        for no such conference.  The room's policy is replaced, never
        changed in place: a configured room's policy is the config's."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        if room.policy.locked != locked:
            room.policy = room.policy._replace(locked=locked)
            self.log.info("{conf}: {event} by the operator", conf=room.name,
                          event="locked" if locked else "unlocked")
        return 200, {"name": room.name, "locked": locked}

    def locked(self):
        """The names of the locked conferences here."""
        return sorted(room.name for room in self.rooms if room.policy.locked)

    def end(self, name):
        """End conference ``name`` here: BYE to every call of it (members,
        callers still entering a PIN), then a final NOTIFY with
        ``Subscription-State: terminated;reason=noresource`` (RFC 6665
        §4.2.2) to each subscriber of its conference state, which then
        shows nobody; the room is retired once nothing holds it.
        ``{"name", "calls", "subscriptions"}``.  404 for no such
        conference; 409 naming the foci that hold members of it (ending
        them is not forwarded yet): nothing is ended then."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        s = room.services
        others = sorted({holder for holder, _ in room.mesh.replica.members().values()
                         if holder != s.node.uri})
        if others:
            return 409, {"error": "members held by other foci", "foci": others}
        legs = [leg for leg in room.legs if not leg.handed_off]
        self.log.info("{conf}: {event} by the operator ({n} calls)", event="ended",
                      conf=room.name, n=len(legs))
        for leg in legs:
            leg.hangup()
        # The members left the model first: the final NOTIFY shows nobody.
        subs = s.notifier.subscriptions(package=s.members_package, resource=room)
        for sub in subs:
            sub.terminate(ENDED_REASON)
        return 200, {"name": room.name, "calls": len(legs), "subscriptions": len(subs)}


def _sip_uri(text):
    """``text`` parsed as a SIP URI, or None."""
    try:
        return URI.parse(text)
    except SIPError:
        return None
