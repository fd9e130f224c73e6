"""SIP digest authentication, server side (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.

Rules of this module:

- Credentials are HA1 values only (htdigest files, ``load_users``); no
  plain password is ever stored or needed to verify.
- A challenge offers SHA-256 first, then MD5 (RFC 8760 §2.3: one challenge
  per algorithm, most preferred first), always with qop="auth".
- Nonces are stateless: issue time, salt and an HMAC-SHA256 under a server
  secret over time, salt, realm and opaque.  Validating one needs no table.
- The only state is the replay table (nonce → highest nc, RFC 7616 §3.4)
  and it is bounded: expired nonces are pruned, and when the cap is hit the
  oldest are evicted and every nonce issued up to then counts as stale.
- A response is verified before staleness is reported: stale=true is only
  for a correct digest under an old nonce (RFC 7616 §3.3).
- An unknown user, a user without an HA1 for the algorithm and a wrong
  password take the same path (dummy HA1) and give the same reason.
- Header values are untrusted: parsing is bounded and every failure is an
  ``AuthError``; ``check`` turns it into a REFUSED verdict.
- Time comes from ``clock.seconds()``; nothing here does I/O except
  ``load_users`` reading the file it is given.

What the caller does with a verdict: OK → proceed; MISSING, REFUSED →
401/407 with ``challenge()``; STALE → the same with ``challenge(stale=True)``.
Count REFUSED per source in a ``FailureLimiter`` and answer 403 while banned.
"""

import base64
import collections
import enum
import hashlib
import hmac
import os
import re
import secrets
import struct
from typing import NamedTuple, Optional

__all__ = ["AuthError", "Outcome", "Verdict", "DigestAuthenticator", "FailureLimiter",
           "header_names", "parse_auth_params", "parse_credentials", "ha1", "load_users"]

#: Algorithm name → hash (RFC 7616 §3.2 / RFC 8760 §2.1); "-sess" not supported.
_HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_HEX_LEN = {"SHA-256": 64, "MD5": 32}

MAX_VALUE = 256      # any one auth-param value
MAX_HEADER = 4096    # a whole credentials value
MAX_PARAMS = 32

_WS = " \t\r\n"
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# RFC 3261 §25.1: auth-param = name EQUAL (token / quoted-string); COMMA = SWS "," SWS.
# qdtext excludes controls (tab allowed) and lone surrogates (unencodable).
_PARAM = re.compile(
    r'[ \t\r\n]*(' + _TOKEN + r')[ \t\r\n]*=[ \t\r\n]*'
    r'(?:"((?:[^"\\\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"'
    r'|(' + _TOKEN + r'))[ \t\r\n]*(,|$)')
_UNQUOTE = re.compile(r"\\(.)", re.S)
_NC = re.compile(r"[0-9a-fA-F]{8}\Z")
_HEX = re.compile(r"[0-9a-fA-F]+\Z")
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}\Z")
_KNOWN = frozenset(("username", "realm", "nonce", "uri", "response", "algorithm",
                    "cnonce", "opaque", "qop", "nc"))


class AuthError(ValueError):
    """Credentials or a users file that cannot be used; ``reason`` is short."""

    def __init__(self, reason):
        self.reason = reason
        super().__init__(reason)


class Outcome(enum.Enum):
    OK = "ok"
    STALE = "stale"
    REFUSED = "refused"
    MISSING = "missing"


class Verdict(NamedTuple):
    """What ``check`` decided; ``username`` only with OK, ``reason`` with REFUSED."""

    outcome: Outcome
    username: Optional[str] = None
    reason: Optional[str] = None

    @property
    def ok(self):
        return self.outcome is Outcome.OK


_MISSING = Verdict(Outcome.MISSING)
_STALE = Verdict(Outcome.STALE)


def _refused(reason):
    return Verdict(Outcome.REFUSED, reason=reason)


def header_names(status):
    """(challenge header, credentials header) for a 401 or 407 (RFC 3261 §22.2, §22.3)."""
    if status == 401:
        return ("WWW-Authenticate", "Authorization")
    if status == 407:
        return ("Proxy-Authenticate", "Proxy-Authorization")
    raise ValueError(f"no digest challenge goes with status {status}")


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(algorithm, text):
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


def ha1(user, realm, password, algorithm="MD5"):
    """H(username ":" realm ":" password), the stored secret (RFC 7616 §3.4.2)."""
    return _h(algorithm, f"{user}:{realm}:{password}")


def parse_auth_params(value, expect=None):
    """(scheme lowercased, {name lowercased: value}) of a challenge or credentials.

    Grammar of RFC 3261 §25.1 / RFC 7616 §3.4: scheme, LWS, then
    comma-separated name=token or name=quoted-string; duplicates refused.
    A scheme other than ``expect`` is refused before its params are read.
    """
    if not isinstance(value, str):
        raise AuthError("not text")
    if len(value) > MAX_HEADER:
        raise AuthError("too long")
    text = value.strip(_WS)
    end = 0
    while end < len(text) and text[end] not in _WS:
        end += 1
    scheme = text[:end].lower()
    if not scheme or not re.fullmatch(_TOKEN, scheme):
        raise AuthError("no scheme")
    if expect is not None and scheme != expect.lower():
        raise AuthError(f"not {expect}")
    params = {}
    pos = end
    if pos == len(text):
        raise AuthError("no parameters")
    while pos < len(text):
        m = _PARAM.match(text, pos)
        if m is None or (m.group(4) == "," and m.end() == len(text)):
            raise AuthError("bad parameter syntax")
        name = m.group(1).lower()
        if name in params:
            raise AuthError(f"duplicate {name}")
        raw = m.group(2)
        val = _UNQUOTE.sub(r"\1", raw) if raw is not None else m.group(3)
        if len(val) > MAX_VALUE:
            raise AuthError(f"{name} too long")
        params[name] = val
        if len(params) > MAX_PARAMS:
            raise AuthError("too many parameters")
        pos = m.end()
    return scheme, params


def parse_credentials(value):
    """The digest-response params of an (Proxy-)Authorization value, checked.

    Requires username, realm, nonce, uri, response (RFC 3261 §22.4), and with
    qop also cnonce and an 8-hex-digit nc (RFC 7616 §3.4).  ``algorithm``
    is upper-cased and defaults to MD5 (RFC 7616 §3.3); ``qop`` is lowered.
    Unknown params are dropped (RFC 2617 §3.2.2: ignored), so two values
    with equal results mean the same thing.
    """
    params = parse_auth_params(value, "Digest")[1]
    params = {k: v for k, v in params.items() if k in _KNOWN}
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in params:
            raise AuthError(f"missing {name}")
    params["algorithm"] = params.get("algorithm", "MD5").upper()
    if "qop" in params:
        params["qop"] = params["qop"].lower()
        for name in ("cnonce", "nc"):
            if name not in params:
                raise AuthError(f"missing {name}")
        if not _NC.match(params["nc"]) or int(params["nc"], 16) == 0:
            raise AuthError("bad nc")
    elif "nc" in params or "cnonce" in params:
        raise AuthError("nc without qop")   # RFC 2617 §3.2.2: only with qop
    return params


def load_users(path_or_lines, realm):
    """user → {"MD5": ha1[, "SHA-256": ha1]} for ``realm`` from htdigest text.

    Lines are ``user:realm:HA1-MD5[:HA1-SHA256]`` (the fourth field is ours,
    so one file serves RFC 8760 SHA-256 too); other realms are skipped.
    """
    if isinstance(path_or_lines, (str, bytes, os.PathLike)):
        with open(path_or_lines, encoding="utf-8") as f:
            lines = f.read().splitlines()
    else:
        lines = path_or_lines
    users = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) not in (3, 4) or not all(fields):
            raise AuthError(f"line {number}: expected user:realm:HA1[:HA1-SHA256]")
        if fields[1] != realm:
            continue
        entry = {}
        for algorithm, digest in zip(("MD5", "SHA-256"), fields[2:]):
            if len(digest) != _HEX_LEN[algorithm] or not _HEX.match(digest):
                raise AuthError(f"line {number}: bad {algorithm} HA1")
            entry[algorithm] = digest.lower()
        if fields[0] in users:
            raise AuthError(f"line {number}: duplicate user {fields[0]}")
        users[fields[0]] = entry
    return users


def _same_uri(digest_uri, request_uri):
    """Does the digest's ``uri`` name the Request-URI?  The same text, or
    the same SIP URI by RFC 3261 §19.1.4 but for parameter spelling (phones
    write the Request-URI they meant, not always byte for byte)."""
    if digest_uri == request_uri:
        return True
    from .errors import SIPError
    from .uri import URI
    try:
        a, b = URI.parse(digest_uri), URI.parse(request_uri)
    except SIPError:
        return False
    if not (a.is_sip and b.is_sip):
        return False
    return (a.scheme, a.user, a.host.lower(), a.port) == (b.scheme, b.user, b.host.lower(),
                                                          b.port)


class DigestAuthenticator:
    """Challenges and verifies digest credentials for one realm."""

    def __init__(self, credentials, realm, clock, secret=None, nonce_lifetime=300.0,
                 opaque=None, algorithms=("SHA-256", "MD5"), allow_no_qop=False,
                 max_nonces=10000):
        self.credentials = credentials      # user → {algorithm: HA1}
        self.realm = realm
        self.clock = clock
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.nonce_lifetime = nonce_lifetime
        self.opaque = opaque
        self.algorithms = tuple(a for a in algorithms if a in _HASHES)
        self.allow_no_qop = allow_no_qop
        self.max_nonces = max_nonces
        # nonce → (issue ms, highest nc); insertion order ≈ issue order.
        self._seen = collections.OrderedDict()
        self._evicted_upto = -1     # issue ms of the newest evicted nonce
        # Unknown users hash against these, so they cost what a known one does.
        self._dummy = {a: _h(a, secrets.token_hex(16)) for a in _HASHES}

    # -- nonces (stateless, RFC 7616 §3.3 leaves the construction to us)

    def _mac(self, raw):
        data = b"|".join((raw, self.realm.encode("utf-8"),
                          (self.opaque or "").encode("utf-8")))
        return hmac.new(self.secret, data, hashlib.sha256).digest()[:16]

    def _encode(self, raw):
        return base64.urlsafe_b64encode(raw + self._mac(raw)).decode("ascii").rstrip("=")

    def new_nonce(self):
        ms = max(0, int(self.clock.seconds() * 1000))
        return self._encode(struct.pack(">Q", ms) + secrets.token_bytes(8))

    def _nonce_time(self, nonce):
        """Issue time in ms of one of our nonces, or None for anything else."""
        if not _NONCE.match(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce + "=")[:16]
        # Re-encoding also refuses non-canonical base64 spellings.
        if not hmac.compare_digest(self._encode(raw), nonce):
            return None
        return struct.unpack(">Q", raw[:8])[0]

    # -- challenges (RFC 3261 §22.1, §20.44 / §20.27; RFC 8760 §2.3)

    def challenge(self, stale=False):
        """Challenge values, one per algorithm in preference order, same nonce."""
        parts = [f"realm={_quote(self.realm)}", f'nonce="{self.new_nonce()}"', 'qop="auth"']
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if stale:
            parts.append("stale=true")      # RFC 7616 §3.3
        return ["Digest " + ", ".join(parts + [f"algorithm={a}"]) for a in self.algorithms]

    def challenge_headers(self, status, stale=False):
        """(name, value) pairs for a 401 or 407 response."""
        name = header_names(status)[0]
        return [(name, value) for value in self.challenge(stale)]

    # -- verification

    def check(self, method, header_value, request_uri_text=None):
        """Verdict on the credentials of a request.

        ``header_value`` is one (Proxy-)Authorization value or a list of
        them; the one for our realm is used (RFC 3261 §22.3).
        """
        values = [header_value] if isinstance(header_value, str) else list(header_value or ())
        values = [v for v in values if not isinstance(v, str) or v.strip(_WS)]
        if not values:
            return _MISSING
        reason = "realm"
        for value in values[:8]:
            try:
                params = parse_credentials(value)
            except AuthError as e:
                reason = e.reason
                continue
            if params["realm"] == self.realm:
                return self._verify(method, params, request_uri_text)
        return _refused(reason)

    def _verify(self, method, p, request_uri_text):
        algorithm = p["algorithm"]
        if algorithm not in self.algorithms:
            return _refused("algorithm")
        qop = p.get("qop")
        if qop is None and not self.allow_no_qop:
            return _refused("qop required")   # RFC 8760 §2: qop now required
        if qop not in (None, "auth"):
            return _refused("qop")            # auth-int not offered
        if request_uri_text is not None and not _same_uri(p["uri"], request_uri_text):
            return _refused("uri")            # RFC 7616 §3.4.6
        if p.get("opaque") != self.opaque:
            return _refused("opaque")         # RFC 7616 §3.3: returned unchanged
        nonce = p["nonce"]
        issued = self._nonce_time(nonce)
        if issued is None:
            return _refused("nonce")
        # RFC 7616 §3.4.1 / §3.4.3; RFC 2069 form without qop (RFC 3261 §22.4).
        user = p["username"]
        stored = self.credentials.get(user) or {}
        known = algorithm in stored
        secret_ha1 = stored[algorithm] if known else self._dummy[algorithm]
        ha2 = _h(algorithm, f"{method}:{p['uri']}")
        if qop is None:
            expected = _h(algorithm, f"{secret_ha1}:{nonce}:{ha2}")
        else:
            expected = _h(algorithm,
                          f"{secret_ha1}:{nonce}:{p['nc']}:{p['cnonce']}:{qop}:{ha2}")
        matches = hmac.compare_digest(expected.encode(), p["response"].encode("utf-8"))
        if not (matches and known):
            return _refused("credentials")
        return self._fresh(nonce, issued, int(p["nc"], 16) if qop else 0, user)

    def _fresh(self, nonce, issued, nc, user):
        """Age and replay (RFC 7616 §3.3, §3.4 nc; RFC 3261 §22.4)."""
        now = max(0, int(self.clock.seconds() * 1000))
        lifetime = int(self.nonce_lifetime * 1000)
        if not -1000 <= now - issued <= lifetime:
            return _STALE
        seen = self._seen
        while seen:     # prune expired from the old end
            first = next(iter(seen))
            if now - seen[first][0] <= lifetime:
                break
            del seen[first]
        entry = seen.get(nonce)
        if entry is None:
            if issued <= self._evicted_upto:
                return _STALE                # its record may have been evicted
            while len(seen) >= self.max_nonces:
                _, (old, _) = seen.popitem(last=False)
                self._evicted_upto = max(self._evicted_upto, old)
        elif nc == 0:
            return _STALE                    # RFC 2069 nonce: once, then a fresh one
        elif nc <= entry[1]:
            return _refused("replay")
        seen[nonce] = (issued, nc)
        return Verdict(Outcome.OK, username=user)


class FailureLimiter:
    """Bans a source key after ``max_failures`` failures within ``window`` s.

    Memory is bounded by ``max_sources`` (least recently failing evicted;
    an evicted ban is lifted, the price of the bound).
    """

    def __init__(self, clock, max_failures=10, window=60.0, ban=300.0, max_sources=10000):
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self.ban = ban
        self.max_sources = max_sources
        self._sources = collections.OrderedDict()   # key → [deque of times, banned until]

    def failed(self, key):
        """Record one failure of ``key``; True if it is now banned."""
        now = self.clock.seconds()
        entry = self._sources.pop(key, None)
        if entry is None:
            entry = [collections.deque(maxlen=self.max_failures), None]
        times = entry[0]
        times.append(now)
        if len(times) == self.max_failures and now - times[0] <= self.window:
            entry[1] = now + self.ban
            times.clear()
        self._sources[key] = entry
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return self.banned(key)

    def banned(self, key):
        entry = self._sources.get(key)
        if entry is None or entry[1] is None:
            return False
        if self.clock.seconds() < entry[1]:
            return True
        entry[1] = None
        return False

    def reset(self, key):
        """Forget ``key`` (e.g. after it authenticated)."""
        self._sources.pop(key, None)
