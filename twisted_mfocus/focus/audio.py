"""The calls' audio at a focus: which calls are mixed, and how members
mute themselves (issue 6; the mixing itself is media/engine.py).

- A call is in its conference's mix while it is confirmed, not handed to
  another focus, and its answer settled on G.711; a cascade leg (another
  focus, cascade.py) is mixed as a peer.  Re-INVITEs update it (hold,
  codec, address).
- Mute (the API, or ``*6`` from the member, RFC 4733): its voice is kept
  out; the conference shows it (media status, call.py).
"""

from twisted.logger import Logger

from ..media.engine import MediaEngine

__all__ = ["Audio", "STAR_WINDOW"]

STAR_WINDOW = 3.0       # seconds between '*' and '6' of the self-mute code


class Audio:
    """The focus's side of the media engine."""

    log = Logger()

    def __init__(self, focus):
        self.focus = focus
        self.engine = None          # once attached to the reactor

    def attach(self, clock):
        self.engine = MediaEngine(clock, self._digit)

    def stop(self):
        if self.engine is not None:
            self.engine.stop()

    def mix(self, leg):
        """Put ``leg`` in its conference's mix, as negotiated (or take it out)."""
        engine = self.engine
        if engine is None:
            return
        n = leg.negotiated
        if leg.state != "confirmed" or leg.handed_off or n is None or n.codec is None:
            engine.remove(leg)
        elif leg in engine.streams:
            engine.update(leg, n)
        else:
            engine.add(leg.conference, leg, leg.rtp, n, peer=leg.peer is not None)
            engine.mute(leg, leg.muted)

    def set_muted(self, leg, muted):
        """Keep ``leg``'s voice out of the mix (or put it back)."""
        if leg.muted == muted:
            return
        leg.muted = muted
        self.log.info("{conf}: {member} {event}", event="muted" if muted else "unmuted",
                      conf=leg.conference.name, member=leg.user_entity, call=leg.call_id)
        if self.engine is not None:
            self.engine.mute(leg, muted)
        self.focus.mesh_of(leg.conference).member_changed(leg)

    def _digit(self, leg, digit):
        """RFC 4733 digits from a member: ``*6`` toggles its mute."""
        now = self.focus.clock.seconds()
        if digit == "6" and leg.last_digit == "*" and now - leg.last_digit_at <= STAR_WINDOW:
            self.set_muted(leg, not leg.muted)
            digit = None
        leg.last_digit, leg.last_digit_at = digit, now
