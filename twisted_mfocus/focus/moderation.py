"""What an operator does to a conference through the management API
(issue 20): mute and unmute a member, mute or unmute everyone but one,
kick a member, dial someone in, lock and unlock the room, end the
conference.

Every operation answers ``(HTTP status, JSON body)`` for ``web/api.py``.
A kick of a member another focus holds is forwarded to that focus as the
foci already ask each other: an out-of-dialog REFER carrying our proof and
the forwarded marker, whose Refer-To is the member with ``method=BYE``
(RFC 4579 §5.5, RFC 3515 §2.1; delegation.py, refer.py): 202 naming it.
What SIP has no request for (muting a member another focus holds, muting
everyone there, locking the room there too, ending it there) is asked of
the other foci by relay.py (a MESSAGE from focus to focus, proven like
the rest): 202 naming the foci asked (``forwarded_to``).  A focus asked so
acts on what it holds and asks nobody further (``relay=False``).

A dial goes the way a member's REFER dial-out goes (refer.py): the same
``[focus] refer_targets`` rule (403 with its reason), ``Room.dial_out``
here, or, on a full focus, the REFER forwarded to a focus with room
(delegation.py, case 2); 202 at once, the outcome in ``dials``.

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

import collections
import weakref

from twisted.logger import Logger

from ..sip.errors import SIPError
from ..sip.uri import URI
from .delegation import Forwarded
from .relay import ask

__all__ = ["Moderation"]

#: RFC 6665 §4.2.2: the state watched no longer exists (the conference ended)
ENDED_REASON = "noresource"
#: the dials remembered per room (``Moderation.dials``)
MAX_DIALS = 32


class Moderation:
    """The operator's actions on the conferences of ``rooms`` (room.Rooms)."""

    log = Logger()

    def __init__(self, rooms):
        self.rooms = rooms
        #: room -> {uri: the last dial of it} (``dials``), forgotten with the room
        self._dials = weakref.WeakKeyDictionary()

    # -- one member -----------------------------------------------------------

    def set_muted(self, name, member, muted, relay=True):
        """Mute or unmute ``member`` (a URI, as text) of conference ``name``:
        its voice is kept out of the mix, as ``*6`` does.  404 for no such
        conference or member, 400 for a member that is no SIP URI; a member
        of another focus is asked of it (202 ``forwarded_to``), or, with
        ``relay`` off, 409 naming it."""
        room, legs, refusal = self._member_legs(name, member, lambda leg: not leg.handed_off)
        if refusal is not None and refusal[0] == 409 and relay:
            holder = refusal[1]["focus"]
            ask(room, holder, "mute" if muted else "unmute", member=member)
            return 202, {"uri": member, "muted": muted, "forwarded_to": holder}
        if refusal is not None:
            return refusal
        for leg in legs:
            room.set_muted(leg, muted)
        return 200, {"uri": member, "muted": muted}

    def kick(self, name, member):
        """End ``member``'s calls held here with BYE (RFC 3261 §15.1.1):
        ``{"uri", "calls"}``; the errors of ``set_muted``."""
        room, legs, refusal = self._member_legs(name, member, lambda leg: leg.is_ours)
        if refusal is not None and refusal[0] == 409:
            return self._forward_kick(room, member, refusal[1]["focus"])
        if refusal is not None:
            return refusal
        self.log.info("{conf}: {member} {event} by the operator ({n} calls)", event="kicked",
                      conf=room.name, member=member, n=len(legs))
        for leg in legs:
            leg.hangup()
        return 200, {"uri": member, "calls": len(legs)}

    def _forward_kick(self, room, member, holder):
        """Ask ``holder``, the focus holding ``member``, to BYE it: a REFER
        from us as a focus (proof, marker: refer.py takes it from a trusted
        focus outside any call) with ``Refer-To: <member;method=BYE>``
        (RFC 4579 §5.5).  202 ``{"uri", "forwarded_to"}``; the outcome
        (the holder's sipfrag) is logged, and the member leaves every view."""
        s = room.services
        target = URI.parse(member)
        target = target.replace(params={**target.params, "method": "BYE"}, headers=[])

        def done(status, reason):
            self.log.info("{conf}: {member}: kick by {focus}: {status} {reason}",
                          conf=room.name, member=member, focus=holder, status=status,
                          reason=reason, event="kick forwarded")
        self.log.info("{conf}: {member} {event} by the operator: forwarded to {focus}",
                      event="kicked", conf=room.name, member=member, focus=holder)
        room.delegator.refer(holder, target, room.name_addr, Forwarded(s.node.uri, 1), done)
        return 202, {"uri": member, "forwarded_to": holder}

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

    def mute_all(self, name, muted, spare=None, relay=True):
        """Mute (or unmute) every member held here but ``spare`` (a URI,
        as text: its user or one endpoint): ``{"name", "muted", "except",
        "members", "elsewhere"}``, ``members`` the URIs now so, ``elsewhere``
        the members of other foci (``{"uri", "focus"}``), whose foci are
        asked to do the same (``forwarded_to``; not with ``relay`` off).  404
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
        asked = sorted({focus for _, focus in elsewhere}) if relay else []
        for focus in asked:
            ask(room, focus, "mute-all" if muted else "unmute-all", spare=spare)
        return 200, {"name": room.name, "muted": muted, "except": spare,
                     "members": sorted(set(changed)),
                     "elsewhere": [{"uri": uri, "focus": focus} for uri, focus in elsewhere],
                     "forwarded_to": asked}

    # -- dialling out ---------------------------------------------------------------

    def dial(self, name, text):
        """Dial ``text`` (a SIP URI) into conference ``name``, as a member's
        REFER would have us do (RFC 4579 §5.5): 202 ``{"uri", "status":
        "dialling"}`` (``"forwarded": true`` when a full focus passed it to
        a focus with room), the outcome then in ``dials``.  404 no such
        conference; 400 not a plain SIP URI; 403 ``refer_targets`` forbids
        it (``reason``); 409 a member already; 503 stopping, or full with
        no focus having room (refer.py answers a REFER 486 then)."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        uri = _sip_uri(text)
        if uri is None or not uri.is_sip or uri.headers or "method" in uri.params:
            return 400, {"error": f"not a SIP URI to dial: {text}"}
        s = room.services
        reason = s.referrals.refused_target(uri)
        if reason:
            return 403, {"error": "refused by [focus] refer_targets", "reason": reason}
        holder = room.holder_of(text)
        if holder:
            return 409, {"error": "already a member", "focus": holder}
        if room.legs_of(uri):
            return 409, {"error": "already being dialled"}
        if s.node.stopping:
            return 503, {"error": "this focus is stopping"}
        forward = s.node.is_full()
        if forward and (not room.room_elsewhere() or s.node.config.max_hops < 1):
            return 503, {"error": "this focus is full and no focus has room"}
        report = self._dial_record(room, text)
        self.log.info("{conf}: {event} {target} by the operator{how}", event="dialling",
                      conf=room.name, target=text, how=" (forwarded)" if forward else "")
        if forward:
            room.forward(uri, room.name_addr, Forwarded(s.node.uri, 1), report)
            return 202, {"uri": text, "status": "dialling", "forwarded": True}
        room.dial_out(uri, room.name_addr, report)
        return 202, {"uri": text, "status": "dialling"}

    def dials(self, name):
        """The operator's recent dials into ``name``, oldest first: ``[{"uri",
        "status": dialling|ringing|connected|failed, "sip": "STATUS
        REASON"}]`` (the last response heard); None for no such conference."""
        room = self.rooms.get(name)
        if room is None:
            return None
        return [dict(d) for d in self._dials.get(room, {}).values()]

    def _dial_record(self, room, text):
        """A dial's record, kept (at most MAX_DIALS a room); its report callback."""
        records = self._dials.setdefault(room, collections.OrderedDict())
        records.pop(text, None)
        record = records[text] = {"uri": text, "status": "dialling", "sip": None}
        while len(records) > MAX_DIALS:
            records.popitem(last=False)

        def report(status, reason):
            if record["status"] in ("connected", "failed"):
                return
            record["sip"] = f"{status} {reason}"
            record["status"] = ("dialling" if status < 180 else "ringing" if status < 200
                                else "connected" if status < 300 else "failed")
        return report

    # -- the room -----------------------------------------------------------------

    def set_locked(self, name, locked, relay=True):
        """Lock (or unlock) conference ``name``, here and (``relay``) at the
        other live foci of it, so a newcomer is refused at any of them:
        ``{"name", "locked", "forwarded_to"}``; 404 for no such conference.
        The room's policy is replaced, never changed in place: a configured
        room's policy is the config's."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        if room.policy.locked != locked:
            room.policy = room.policy._replace(locked=locked)
            self.log.info("{conf}: {event} by the operator", conf=room.name,
                          event="locked" if locked else "unlocked")
        asked = self._other_foci(room) if relay else []
        for focus in asked:
            ask(room, focus, "lock" if locked else "unlock")
        return 200, {"name": room.name, "locked": locked, "forwarded_to": asked}

    @staticmethod
    def _other_foci(room):
        us = room.services.node.uri
        return sorted(record.uri for record in room.mesh.replica.live_foci()
                      if record.uri != us)

    def record(self, name, start):
        """Start or stop recording conference ``name`` (recordings.py):
        ``{"file", "sidecar", "recording"}``; 404 for no such conference,
        403 with recording off, 409 already (or not) recording, 507 short
        of disk space."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        recordings = room.services.audio.recordings
        return recordings.start(room) if start else recordings.stop(room)

    def locked(self):
        """The names of the locked conferences here."""
        return sorted(room.name for room in self.rooms if room.policy.locked)

    def end(self, name, relay=True):
        """End conference ``name`` here: BYE to every call of it (members,
        callers still entering a PIN), then a final NOTIFY with
        ``Subscription-State: terminated;reason=noresource`` (RFC 6665
        §4.2.2) to each subscriber of its conference state, which then
        shows nobody; the room is retired once nothing holds it.
        ``{"name", "calls", "subscriptions", "forwarded_to"}``: the other
        live foci are asked to end it too (``relay``).  404 for no such
        conference."""
        room = self.rooms.get(name)
        if room is None:
            return 404, {"error": "no such conference"}
        s = room.services
        asked = self._other_foci(room) if relay else []
        for focus in asked:
            ask(room, focus, "end")
        legs = [leg for leg in room.legs if not leg.handed_off]
        self.log.info("{conf}: {event} by the operator ({n} calls)", event="ended",
                      conf=room.name, n=len(legs))
        for leg in legs:
            leg.hangup()
        # The members left the model first: the final NOTIFY shows nobody.
        subs = s.notifier.subscriptions(package=s.members_package, resource=room)
        for sub in subs:
            sub.terminate(ENDED_REASON)
        return 200, {"name": room.name, "calls": len(legs), "subscriptions": len(subs),
                     "forwarded_to": asked}


def _sip_uri(text):
    """``text`` parsed as a SIP URI, or None."""
    try:
        return URI.parse(text)
    except SIPError:
        return None
