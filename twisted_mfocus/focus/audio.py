"""The calls' audio at a focus: which calls are mixed, and the ``*6``
self-mute code (the mixing itself is media/engine.py).

- A call is in its room's mix while the focus holds its member (confirmed,
  not handed to another focus) and its answer settled on a codec; a cascade
  leg (another focus, cascade.py) is mixed as a peer.  Re-INVITEs update it
  (hold, codec, address).  Each room's mixer is the engine's, keyed by the
  room.
- Mute (the API, or ``*6`` from the member, RFC 4733) keeps a voice out;
  ``Room.set_muted`` decides it, this module applies it.
- A lobby call (asked for a PIN, pin.py) is in no mix: its stream of its
  own is sent the prompts (media/prompts.py) and gives its digits to
  ``Room.digit_received``.
- A member whose media stopped (``[media] rtp_timeout``, ``hold_timeout``
  on hold) is gone without BYE: its call is ended.
- A room's recording (recordings.py) is fed by the engine's tap: the
  room's whole mix each tick; the focus stopping ends every recording
  (its WAV sizes patched, its sidecar written).
- A call's SRTP keys (``Negotiated.keys``) and its RTP source learning
  (``[media] relatch_after``) are the engine's; this module passes them on.
"""

from twisted.logger import Logger

from ..media.engine import MediaEngine
from ..media.prompts import Player, duration
from .recordings import Recordings

__all__ = ["Audio", "STAR_WINDOW"]

STAR_WINDOW = 3.0       # seconds between '*' and '6' of the self-mute code


class Audio:
    """The focus's side of the media engine."""

    log = Logger()

    def __init__(self, clock, config):
        self.clock = clock
        self.engine = MediaEngine(clock, self._digit, relatch_after=config.relatch_after,
                                  rtp_timeout=config.rtp_timeout,
                                  hold_timeout=config.hold_timeout, on_silent=self._silent,
                                  speakers=config.speakers,
                                  jitter=(config.jitter_min, config.jitter_max),
                                  rate=config.mix_rate)
        self._players = {}      # lobby leg -> prompts.Player
        #: the rooms recorded here ([recording]: the API starts and stops them)
        self.recordings = Recordings(clock, config, self.engine)

    def stop(self):
        self.recordings.stop_all("the focus stopped")
        self.engine.stop()

    def mix(self, leg):
        """Put ``leg`` in its room's mix, as negotiated (or take it out); a
        lobby leg gets its prompt stream instead."""
        engine = self.engine
        n = leg.negotiated
        if not (leg.is_ours or leg.in_lobby) or n is None or n.codec is None:
            engine.remove(leg)
            self._players.pop(leg, None)
        elif leg.in_lobby:
            player = self._players.get(leg)
            if player is None:
                player = self._players[leg] = Player(engine.rate)
            if leg in engine.lobby:
                engine.update(leg, n)
            else:
                engine.add_lobby(leg, leg.rtp, n, player.next_frame)
        elif leg in engine.streams:
            engine.update(leg, n)
        else:
            self._players.pop(leg, None)
            engine.add(leg.room, leg, leg.rtp, n, peer=leg.is_cascade)
            engine.mute(leg, leg.muted)

    def play(self, leg, prompt):
        """Play ``prompt`` to lobby leg ``leg``; the seconds it lasts."""
        player = self._players.get(leg)
        return player.play(prompt) if player is not None else duration(prompt)

    def mute(self, leg):
        """Apply ``leg.muted`` to the mix."""
        self.engine.mute(leg, leg.muted)

    def _silent(self, leg):
        """No RTP or RTCP from ``leg`` for its timeout: the phone is gone
        without BYE (killed, unplugged); the call ends, its place is free."""
        self.log.info("{call}: no media from {member} for {s:g} s: ending the call",
                      call=leg.call_id, member=leg.user_entity,
                      s=self.engine.rtp_timeout if leg.negotiated.direction == "sendrecv"
                      else self.engine.hold_timeout)
        leg.hangup()

    def _digit(self, leg, digit):
        """An RFC 4733 §2 telephone-event: the room routes it (PIN or *6)."""
        leg.room.digit_received(leg, digit)

    def star_code(self, leg, digit):
        """A member's digit: ``*6`` toggles its mute."""
        now = self.clock.seconds()
        if digit == "6" and leg.last_digit == "*" and now - leg.last_digit_at <= STAR_WINDOW:
            leg.room.set_muted(leg, not leg.muted)
            digit = None
        leg.last_digit, leg.last_digit_at = digit, now
