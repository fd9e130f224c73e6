"""The lobby's prompts: generated tones a caller asked for a PIN hears.

Sans-IO (numpy, no files, no reactor).  Three prompts, told apart by ear
and by FFT, all outside the bands members' tones use in the tests (440,
1000 and 1500 Hz, ±60), so a prompt is never taken for a member:

- ``ENTER`` ("enter PIN"): two short 660 Hz beeps;
- ``WRONG`` ("wrong PIN"): one long low 330 Hz tone;
- ``WELCOME``: a rising pair, 780 Hz then 1180 Hz (two steps, not a
  sweep: a sweep would cross 1000 Hz).

Each is 16-bit PCM at the mixer's rate in 20 ms frames with 10 ms
raised-cosine edges (an abrupt edge splashes energy over every band),
made once and cached; the caller's own call codes it.  A ``Player``
gives one caller a frame per tick: the prompt playing, else silence.
"""

import functools

import numpy as np

from .codecs import MIX_RATE

__all__ = ["ENTER", "PROMPTS", "WELCOME", "WRONG", "Player", "duration", "frames", "samples"]

LEVEL = 0.25 * 32767            # -12 dBFS
EDGE = 0.010                    # seconds of fade in and out

ENTER, WRONG, WELCOME = "enter", "wrong", "welcome"

#: prompt -> its notes, (Hz or 0 for a pause, seconds)
PROMPTS = {
    ENTER: ((660, 0.16), (0, 0.12), (660, 0.16), (0, 0.08)),
    WRONG: ((330, 0.80), (0, 0.08)),
    WELCOME: ((780, 0.24), (1180, 0.36), (0, 0.08)),
}


def _note(freq, seconds, rate):
    n = round(seconds * rate)
    if not freq:
        return np.zeros(n)
    wave = np.sin(2 * np.pi * freq * np.arange(n) / rate)
    edge = min(int(EDGE * rate), n // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
    wave[:edge] *= ramp
    wave[n - edge:] *= ramp[::-1]
    return wave


@functools.cache
def samples(name, rate=MIX_RATE):
    """Prompt ``name`` as int16 samples at ``rate``, padded to whole frames."""
    wave = np.concatenate([_note(f, s, rate) for f, s in PROMPTS[name]])
    wave = np.concatenate([wave, np.zeros(-len(wave) % (rate // 50))])
    out = np.round(wave * LEVEL).astype(np.int16)
    out.setflags(write=False)
    return out


@functools.cache
def frames(name, rate=MIX_RATE):
    """Prompt ``name`` as one int16 array per 20 ms frame."""
    return tuple(samples(name, rate).reshape(-1, rate // 50))


@functools.cache
def _silence(rate):
    silence = np.zeros(rate // 50, dtype=np.int16)
    silence.setflags(write=False)
    return silence


def duration(name):
    """Seconds prompt ``name`` lasts."""
    return len(samples(name)) / MIX_RATE


class Player:
    """One lobby caller's audio at the mixer's ``rate``: ``play`` a prompt
    (it replaces the one playing), ``next_frame`` once per tick."""

    def __init__(self, rate=MIX_RATE):
        self.rate = rate
        self.playing = None
        self._next = 0

    def play(self, name):
        """Start prompt ``name``; the seconds it lasts."""
        self.playing, self._next = name, 0
        return duration(name)

    def next_frame(self):
        """This tick's frame: the prompt's next one, else silence (sent all
        the same: a phone and its NAT expect media)."""
        if self.playing is not None:
            coded = frames(self.playing, self.rate)
            if self._next < len(coded):
                self._next += 1
                return coded[self._next - 1]
            self.playing = None
        return _silence(self.rate)
