"""N-1 mixing of one conference at one focus, vectorised.

Sans-IO: the caller puts each party's decoded frame for this tick in its
row (``frame(key)[:] = samples``, or marks it silent) and calls ``mix()``
once per 20 ms tick; it returns, for every party that receives, the G.711
payload to send.  numpy does the work: one sum over the rows, one
subtraction, one clip, one table lookup per codec, for all parties at
once; Python only loops to hand the payloads out.

Parties are *members* (phones this focus holds) and *peers* (the other foci
of the conference, one cascade leg each: docs/design.md, "Cascade"):

- a member hears everyone but itself: all members' voices plus every
  peer's stream, minus its own voice;
- a peer hears the mix of *our members only* (never another peer's
  stream, never its own), so across the mesh each voice reaches each
  member once and nobody hears an echo;
- a party that is muted, on hold, or had nothing to play this tick
  contributes nothing; one that does not receive (hold: ``receives``
  False) gets no payload.

Sums are int32 (no overflow below 65536 parties), clipped to int16 before
encoding (G.711 cannot carry more).
"""

import numpy as np

from .g711 import ALAW_ENCODE, PCMA, PCMU, ULAW_ENCODE
from .receiver import FRAME

__all__ = ["Mixer", "Party"]


class Party:
    """One row of the mixer."""

    __slots__ = ("key", "row", "codec", "peer", "muted", "held", "receives")

    def __init__(self, key, row, codec, peer):
        self.key, self.row, self.codec, self.peer = key, row, codec, peer
        self.muted = False              # by the API or *6
        self.held = False               # the party put us on hold
        self.receives = True


class Mixer:
    """See the module docstring.  ``capacity``: rows preallocated (grows)."""

    def __init__(self, capacity=64):
        self.parties = {}               # key -> Party
        self._frames = np.zeros((capacity, FRAME), dtype=np.int32)
        self._voice = np.zeros(capacity, dtype=bool)    # row has audio this tick
        self._free = list(range(capacity - 1, -1, -1))
        self._layout = None             # cached row index arrays

    # -- parties ------------------------------------------------------------

    def add(self, key, codec=PCMU, peer=False):
        if key in self.parties:
            raise ValueError(f"{key!r} is already mixed")
        if codec not in (PCMU, PCMA):
            raise ValueError(f"cannot mix codec {codec!r}")
        if not self._free:
            self._grow()
        party = self.parties[key] = Party(key, self._free.pop(), codec, peer)
        self._frames[party.row] = 0
        self._voice[party.row] = False
        self._layout = None
        return party

    def remove(self, key):
        party = self.parties.pop(key, None)
        if party is not None:
            self._voice[party.row] = False
            self._free.append(party.row)
            self._layout = None

    def set(self, key, muted=None, receives=None, codec=None, held=None):
        party = self.parties[key]
        if muted is not None:
            party.muted = muted
        if held is not None:
            party.held = held
        if receives is not None:
            party.receives = receives
        if codec is not None:
            party.codec = codec
        self._layout = None

    def _grow(self):
        old = len(self._frames)
        self._frames = np.vstack([self._frames, np.zeros_like(self._frames)])
        self._voice = np.concatenate([self._voice, np.zeros(old, dtype=bool)])
        self._free = list(range(2 * old - 1, old - 1, -1))

    # -- one tick --------------------------------------------------------------

    def put(self, key, samples):
        """``key``'s frame for this tick (int16 samples), or None: silent."""
        party = self.parties[key]
        if samples is None:
            self._voice[party.row] = False
        else:
            self._frames[party.row] = samples
            self._voice[party.row] = True

    def mix(self):
        """{key: G.711 payload} for every receiving party; clears the tick."""
        out16, layout = self._mix()
        result = {}
        if out16 is None:
            return result
        _, _, _, mu_rows, a_rows, keys_mu, keys_a = layout
        if len(mu_rows):
            result.update(zip(keys_mu, (row.tobytes() for row in ULAW_ENCODE[out16[mu_rows]])))
        if len(a_rows):
            result.update(zip(keys_a, (row.tobytes() for row in ALAW_ENCODE[out16[a_rows]])))
        return result

    def mix_linear(self):
        """{key: int16 samples} of what each receiving party hears, before
        coding (tests, recordings); clears the tick."""
        out16, layout = self._mix()
        if out16 is None:
            return {}
        _, _, _, mu_rows, a_rows, keys_mu, keys_a = layout
        samples = out16.view(np.int16)
        return dict(zip(keys_mu + keys_a, samples[np.concatenate([mu_rows, a_rows])]))

    def _mix(self):
        """(clipped mix as uint16 rows, layout), or (None, layout): no parties."""
        layout = self._layout or self._plan()
        rows, members, heard = layout[:3]
        if not len(rows):
            return None, layout
        # What each row contributes: its frame where it speaks and may.
        weight = (self._voice & heard)[rows]
        speaking = self._frames[rows] * weight[:, None]
        own = speaking[members].sum(axis=0)                 # our members only
        total = own + speaking[~members].sum(axis=0)        # + the peers' streams
        out = np.where(members[:, None], total - speaking, own)
        np.clip(out, -32768, 32767, out=out)
        self._voice[:] = False
        return out.astype(np.int16).view(np.uint16), layout

    def _plan(self):
        """Row index arrays for the current parties (rebuilt on a change)."""
        parties = sorted(self.parties.values(), key=lambda p: p.row)
        rows = np.array([p.row for p in parties], dtype=np.intp)
        members = np.array([not p.peer for p in parties], dtype=bool)
        heard = np.zeros(len(self._frames), dtype=bool)
        heard[[p.row for p in parties if not (p.muted or p.held)]] = True
        mu = [i for i, p in enumerate(parties) if p.receives and p.codec == PCMU]
        al = [i for i, p in enumerate(parties) if p.receives and p.codec == PCMA]
        self._layout = (rows, members, heard, np.array(mu, dtype=np.intp),
                        np.array(al, dtype=np.intp), [parties[i].key for i in mu],
                        [parties[i].key for i in al])
        return self._layout
