"""PIN entry (``[room:NAME] pin``), sans-IO: the gate a caller passes in
the lobby before it is a member.

Digits come as RFC 4733 §2 telephone-events or as SIP INFO with
``application/dtmf-relay`` (the de-facto body ``Signal=5``) or
``application/dtmf`` (the body is the key), parsed by ``info_digit``, and
end with ``#``.  The right PIN: ``on_result(True,
why)`` once the welcome prompt has played; ``max_tries`` wrong entries, or
no right one within ``timeout`` s: ``on_result(False, why)``.  Time comes
from the injected clock (``IReactorTime``); the PIN is compared in
constant time, and the digits kept are bounded.
"""

import hmac

from twisted.logger import Logger

from ..media.prompts import ENTER, WELCOME, WRONG

__all__ = ["DTMF_TYPES", "Lobby", "PinGate", "info_digit"]

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
DTMF_TYPES = (DTMF_RELAY, DTMF)     # INFO bodies that carry a key
MAX_DIGITS = 32             # digits kept per entry (more: the entry is wrong)
REPEAT = 3.0                # s between "enter PIN" prompts until a digit comes
GAP = 0.3                   # s of silence between "wrong PIN" and "enter PIN"
_SIGNALS = {"10": "*", "11": "#"}   # some phones send events by number
DEADLINE, PROMPT, FINISH = "deadline", "prompt", "finish"   # the gate's timers


def info_digit(content_type, body):
    """The key an INFO body of ``content_type`` carries, or None."""
    text = bytes(body[:256]).decode("ascii", "replace")
    if content_type == DTMF:
        return _key(text.strip())
    if content_type != DTMF_RELAY:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "signal":
            return _key(value.strip())
    return None


def _key(value):
    value = _SIGNALS.get(value, value).upper()
    return value if len(value) == 1 and value in "0123456789*#ABCD" else None


class PinGate:
    """One caller's PIN entry.  ``play(prompt)`` starts a prompt and returns
    the seconds it lasts; ``on_wrong(n)`` hears each wrong entry."""

    def __init__(self, pin, clock, timeout, play, on_result, max_tries=3, on_wrong=None,
                 repeat=REPEAT):
        self.pin = pin.encode()
        self.clock, self.timeout, self.repeat = clock, timeout, repeat
        self.play, self.on_result, self.on_wrong = play, on_result, on_wrong
        self.max_tries = max_tries
        self.tries = 0
        self.done = False
        self._digits, self._too_long = [], False
        self._timers = {}                       # DEADLINE/PROMPT/FINISH -> DelayedCall

    def _later(self, which, delay, call, *args):
        self._cancel(which)
        self._timers[which] = self.clock.callLater(delay, call, *args)

    def _cancel(self, which):
        call = self._timers.pop(which, None)
        if call is not None and call.active():
            call.cancel()

    def start(self):
        self._later(DEADLINE, self.timeout, self._expired)
        self._prompt()

    def press(self, digit):
        """One digit (``0-9*#A-D``); ``#`` ends an entry."""
        if self.done:
            return
        self._cancel(PROMPT)                    # digits came: no more prompting
        if digit != "#":
            if len(self._digits) < MAX_DIGITS:
                self._digits.append(digit)
            else:
                self._too_long = True
            return
        entered, too_long = "".join(self._digits).encode(), self._too_long
        self._digits, self._too_long = [], False
        if not entered:                         # a lone '#': ask again, no try spent
            self._prompt()
            return
        if hmac.compare_digest(entered, self.pin) and not too_long:
            self._end(True, "admitted", WELCOME)
            return
        self.tries += 1
        if self.on_wrong is not None:
            self.on_wrong(self.tries)
        if self.tries >= self.max_tries:
            self._end(False, f"wrong PIN {self.tries} times", WRONG)
            return
        self._later(PROMPT, self.play(WRONG) + GAP, self._prompt)

    def cancel(self):
        """The call ended: nothing more happens."""
        self.done = True
        for which in list(self._timers):
            self._cancel(which)

    def _prompt(self):
        self._timers.pop(PROMPT, None)
        if not self.done:
            self.play(ENTER)
            self._later(PROMPT, self.repeat, self._prompt)

    def _end(self, ok, why, prompt):
        """Play the last prompt, then tell the result."""
        self.cancel()
        self._later(FINISH, self.play(prompt), self.on_result, ok, why)

    def _expired(self):
        self._timers.pop(DEADLINE, None)
        self.cancel()
        self.on_result(False, f"no PIN within {self.timeout:g} s")


class Lobby:
    """A room's callers that were answered and have not entered its PIN:
    each has a ``PinGate`` and a stream of its own (prompts, digits; the
    room's ``audio``), and is no member (``in_lobby``) until it passes;
    ``on_done(leg, ok, why)`` then admits or hangs up."""

    log = Logger()

    def __init__(self, room, clock, timeout, audio, on_done):
        self.room = room
        self.clock = clock
        self.timeout = timeout
        self.audio = audio
        self.on_done = on_done
        self._gates = {}            # leg -> PinGate

    def __len__(self):
        return len(self._gates)

    def __contains__(self, leg):
        return leg in self._gates

    def enter(self, leg):
        leg.in_lobby = True
        self._gates[leg] = gate = PinGate(
            self.room.policy.pin, self.clock, self.timeout,
            lambda prompt: self.audio.play(leg, prompt),
            lambda ok, why: self._done(leg, ok, why),
            on_wrong=lambda n: self.log_outcome(leg, f"wrong PIN {n}"))
        self.audio.mix(leg)                     # a stream of its own: prompts, digits
        gate.start()

    def press(self, leg, digit):
        """A key ``leg`` pressed: False unless it waits here."""
        gate = self._gates.get(leg)
        if gate is None:
            return False
        gate.press(digit)
        return True

    def leave(self, leg, why):
        """``leg`` ended while it waited."""
        gate = self._gates.pop(leg, None)
        if gate is not None:
            self.log_outcome(leg, f"failed: {why}")
            gate.cancel()
        leg.in_lobby = False

    def _done(self, leg, ok, why):
        if self._gates.pop(leg, None) is not None:
            self.on_done(leg, ok, why)

    def log_outcome(self, leg, outcome):
        self.log.info("{conf}: lobby: {caller} {outcome} (call {call})", conf=self.room.name,
                      caller=leg.user_entity, outcome=outcome, call=leg.call_id,
                      event="lobby")
