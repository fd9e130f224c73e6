"""Proof that a SIP request comes from a focus of the same deployment, sans-IO.

The foci of one deployment share a secret (``[multifocus] secret_file``).  A
focus signs the requests it sends to another focus with an HMAC-SHA256
(RFC 2104, SHA-256 of RFC 6234) under that secret, in one header::

    X-Mfocus-Proof: v=1;ts=<unix seconds>;nonce=<16 lower-case hex>;mac=<base64url>

Rules of this module:

- The MAC covers, each field length-prefixed (4 octets, big-endian) after a
  version label, so no two field lists encode alike: the method, the
  Request-URI as text, the Call-ID, the CSeq number and method, the From
  tag, the To tag (empty if none), ``ts``, ``nonce`` and the SHA-256 of the
  body.  A proof therefore cannot be moved to another request, to another
  target (a replay to another focus has another Request-URI), to another
  dialog or onto another body.  Other headers (Via, Route, Max-Forwards)
  change on the way and are not covered.
- A request carries exactly one proof header; none is MISSING, two or more
  are INVALID.  The value is parsed strictly (fixed order, no blanks,
  canonical base64url, bounded length) and the MAC is compared in constant
  time as text, so a second spelling of the same octets is refused too.
- The MAC is checked before the time: EXPIRED and REPLAYED are only said of
  a proof this deployment made.  ``ts`` must be within ±``skew`` of now.
- A (nonce, mac) is accepted once.  Accepted proofs are remembered for
  ``replay_window`` seconds of their ``ts`` (default ``skew``: as long as
  one can pass the time rule; a proof older than the window is EXPIRED).
  Memory is bounded by ``max_seen``: when full the oldest entry is evicted
  and every proof no newer than an evicted one counts as EXPIRED, so an
  evicted proof cannot be replayed.
- Retransmissions: a UDP retransmission carries the same proof (the
  transaction layer resends the same bytes), and would be REPLAYED here.
  That is right: the transaction layer absorbs retransmissions before they
  reach the application, which checks a proof once per transaction.
- Header values and requests are untrusted: ``check`` never raises, whatever
  the headers hold.  Time comes from ``clock.seconds()``; nothing does I/O
  except ``load_secret`` reading the file it is given.

What the caller does with a verdict: VALID → treat the source as a focus;
anything else → 403 for what only a focus may do (docs/design.md "Trust").
"""

import base64
import collections
import enum
import hashlib
import hmac
import re
import secrets
import struct
from typing import NamedTuple, Optional

from .errors import SIPError

__all__ = ["HEADER", "Proof", "Verdict", "ProofError", "Prover", "load_secret",
           "new_secret"]

HEADER = "X-Mfocus-Proof"
MAX_VALUE = 128          # a proof value is 79 to 90 characters
MIN_SECRET_CHARS = 32    # in the secret file
MIN_SECRET_BYTES = 16    # given to Prover

_LABEL = b"mfocus-proof/1"
_VALUE = re.compile(r"v=1;ts=(0|[1-9][0-9]{0,11});nonce=([0-9a-f]{16});mac=([A-Za-z0-9_-]{43})")


class ProofError(ValueError):
    """A request that cannot be signed or a secret that cannot be used."""

    def __init__(self, reason):
        self.reason = reason
        super().__init__(reason)


class Proof(enum.Enum):
    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"
    EXPIRED = "expired"
    REPLAYED = "replayed"


class Verdict(NamedTuple):
    """What ``check`` decided; ``reason`` says why (short, for logs)."""

    outcome: Proof
    reason: Optional[str] = None

    @property
    def ok(self):
        return self.outcome is Proof.VALID


_VALID = Verdict(Proof.VALID)
_MISSING = Verdict(Proof.MISSING, "no proof")


def _field(data):
    return struct.pack(">I", len(data)) + data


def _covered(request):
    """The request's covered fields as octets; ProofError if it lacks them."""
    try:
        counts = request.headers.key_counts()
        for key in ("call-id", "cseq", "from", "to"):
            if counts.get(key, 0) != 1:
                raise ProofError(f"{key}: {'none' if key not in counts else 'several'}")
        cseq = request.cseq
        from_tag = request.from_.tag or ""
        to_tag = request.to.tag or ""
        texts = (request.method, request.uri_text, request.headers.get("call-id"),
                 str(cseq.seq), cseq.method, from_tag, to_tag)
        return [t.encode("utf-8", "surrogateescape") for t in texts]
    except SIPError as e:
        raise ProofError(f"request: {e.reason}")
    except (UnicodeError, AttributeError, TypeError):
        raise ProofError("request: not encodable")


class Prover:
    """Signs requests and checks their proofs under one deployment secret."""

    def __init__(self, secret, clock, skew=30.0, replay_window=None, max_seen=100_000):
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            raise ProofError(f"secret shorter than {MIN_SECRET_BYTES} bytes")
        self._secret = bytes(secret)
        self.clock = clock
        self.skew = skew
        self.replay_window = skew if replay_window is None else replay_window
        self.max_seen = max(1, max_seen)
        self._seen = collections.OrderedDict()   # (nonce, mac) → ts, in check order
        self._evicted_upto = -1                  # newest ts evicted for room

    def _mac(self, fields, ts, nonce, body):
        data = b"".join(map(_field, [_LABEL, *fields, ts.encode(), nonce.encode(),
                                     hashlib.sha256(body).digest()]))
        digest = hmac.new(self._secret, data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, request):
        """Replace any proof on ``request`` with a fresh one; return its value.

        Raises ProofError if the request lacks a covered header."""
        fields = _covered(request)
        ts = str(max(0, int(self.clock.seconds())))
        nonce = secrets.token_hex(8)
        body = bytes(request.body or b"")
        value = f"v=1;ts={ts};nonce={nonce};mac={self._mac(fields, ts, nonce, body)}"
        request.headers.remove(HEADER)
        request.headers.add(HEADER, value)
        return value

    def check(self, request):
        """The Verdict on the proof ``request`` carries; never raises."""
        try:
            values = request.headers.lines(HEADER)
            if not values:
                return _MISSING
            if len(values) > 1:
                return Verdict(Proof.INVALID, "several proofs")
            value = values[0]
            if not isinstance(value, str) or len(value) > MAX_VALUE:
                return Verdict(Proof.INVALID, "too long")
            m = _VALUE.fullmatch(value)
            if m is None:
                return Verdict(Proof.INVALID, "malformed")
            ts, nonce, mac = m.groups()
            try:
                fields = _covered(request)
            except ProofError as e:
                return Verdict(Proof.INVALID, e.reason)
            body = request.body
            if not isinstance(body, (bytes, bytearray)):
                return Verdict(Proof.INVALID, "request: body")
            expected = self._mac(fields, ts, nonce, bytes(body))
            if not hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii")):
                return Verdict(Proof.INVALID, "mac")
            return self._fresh(int(ts), (nonce, mac))
        except Exception:      # a bug must not become an accepted proof
            return Verdict(Proof.INVALID, "unreadable")

    def _fresh(self, ts, key):
        """Age and replay of a proof whose MAC is right."""
        now = self.clock.seconds()
        if now - ts > self.skew:
            return Verdict(Proof.EXPIRED, "too old")
        if ts - now > self.skew:
            return Verdict(Proof.EXPIRED, "in the future")
        horizon = now - self.replay_window
        if ts < horizon:
            return Verdict(Proof.EXPIRED, "older than the replay window")
        seen = self._seen
        while seen:            # prune by age from the old end
            first = next(iter(seen))
            if seen[first] >= horizon:
                break
            del seen[first]
        if key in seen:
            return Verdict(Proof.REPLAYED, "seen before")
        if ts <= self._evicted_upto:
            return Verdict(Proof.EXPIRED, "older than the replay memory")
        while len(seen) >= self.max_seen:
            _, old = seen.popitem(last=False)
            self._evicted_upto = max(self._evicted_upto, old)
        seen[key] = ts
        return _VALID

    @property
    def remembered(self):
        """How many accepted proofs are held for replay detection."""
        return len(self._seen)


def load_secret(path):
    """The deployment secret in ``path`` (stripped), as octets.

    At least 32 characters (16 random octets as hex or base64 is enough);
    ``new_secret()`` makes a suitable one."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except UnicodeDecodeError:
        raise ProofError(f"{path}: secret is not UTF-8 text")
    except OSError as e:
        raise ProofError(f"{path}: {e.strerror or e}")
    if len(text) < MIN_SECRET_CHARS:
        raise ProofError(f"{path}: secret shorter than {MIN_SECRET_CHARS} characters")
    return text.encode("utf-8")


def new_secret():
    """A fresh secret: 32 random octets, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


if __name__ == "__main__":     # python -m twisted_mfocus.sip.proof > /etc/mfocus/secret
    print(new_secret())
