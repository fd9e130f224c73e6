"""SRTP (RFC 3711) keyed by SDES (RFC 4568): the ``a=crypto`` attribute and
the crypto contexts of one call, through libsrtp (pylibsrtp).

Sans-IO: text and bytes in and out, no reactor, no clock; randomness is
injected (``random_bytes``) so tests can fix keys.

- ``parse_crypto`` reads one ``a=crypto`` value (RFC 4568 §9.1, §9.2):
  bounded, every mistake a ``CryptoError`` saying what.  ``unusable``
  says why a well-formed line is not one we take (suite, MKI, KDR,
  UNENCRYPTED_*, an unknown mandatory session parameter).
- ``choose`` picks the best acceptable line of an offer (``PREFERENCE``).
- ``Policy``: ``[media] srtp`` (``Mode``) and ``sdes_over_cleartext``:
  which offers a call may take and what the focus offers when it dials.
- ``Keys``: the outcome of one offer/answer.  Each side's key protects
  what that side sends (RFC 4568 §7.1): ``local`` ours, ``remote`` theirs.
- ``SrtpContext``: protect/unprotect RTP and RTCP; a failure raises
  ``SrtpError`` with ``reason`` "auth", "replay" or "malformed", for the
  caller to count (never to log per packet).
"""

import base64
import binascii
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Optional, Tuple

import pylibsrtp

__all__ = ["CryptoError", "Crypto", "Keys", "Mode", "NoSecureOffer", "Policy", "PREFERENCE", "SECURE_PROFILES",
           "SECURE_TRANSPORTS", "SUITES", "SrtpContext", "SrtpError", "choose",
           "format_crypto", "new_key", "parse_crypto", "unusable"]

MAX_LENGTH = 512            # characters of one a=crypto value
MAX_LINES = 16              # a=crypto lines of one m= section considered
MAX_PARAMS = 8              # session parameters of one line
MAX_TAG = 999999999         # RFC 4568 §9.1: tag = 1*9DIGIT
MAX_SSRCS = 16              # inbound SSRCs (libsrtp streams) kept before starting afresh
#: RFC 3711 §3.1: SRTP over these profiles; RFC 5124 for the feedback one.
SECURE_PROFILES = ("RTP/SAVP", "RTP/SAVPF")
#: RFC 4568 §8.3: keys in SDP travel only over a transport that hides them.
SECURE_TRANSPORTS = ("TLS",)


class Mode(StrEnum):
    """``[media] srtp``: never SRTP, SRTP when the other side asks, SRTP only."""

    OFF = "off"
    OPTIONAL = "optional"
    MANDATORY = "mandatory"


@dataclass(frozen=True)
class Policy:
    """When a call is SRTP, from ``[media] srtp`` and ``sdes_over_cleartext``."""

    mode: Mode = Mode.OPTIONAL
    sdes_over_cleartext: bool = False

    def keys_may_travel(self, transport):
        """RFC 4568 §8.3: SDES keys only where the signalling is encrypted
        (or where an operator said a lab may do without)."""
        return transport.upper() in SECURE_TRANSPORTS or self.sdes_over_cleartext

    def offer_profile(self, transport, known=None):
        """The profile the focus offers keys on when it dials over
        ``transport`` (None: a plain RTP/AVP offer).  ``known`` is the
        profile of the member's call so far, if it was SRTP (a handover, a
        takeover, our re-INVITE): the phone is offered what it took.
        Without it, only ``mandatory`` offers SRTP (RTP/SAVP: a phone
        that must encrypt refuses anything else).  Keys never go where
        they may not travel: ``NoSecureOffer`` when ``mandatory`` needs
        them there, else the offer is plain."""
        if self.mode is Mode.OFF:
            return None
        if not self.keys_may_travel(transport):
            if self.mode is Mode.MANDATORY:
                raise NoSecureOffer(f"SRTP is mandatory and SDES keys need TLS "
                                    f"(RFC 4568 section 8.3), not {transport.upper()}")
            return None
        if known is not None:
            return known
        return SECURE_PROFILES[0] if self.mode is Mode.MANDATORY else None


class NoSecureOffer(Exception):
    """The focus may not dial: SRTP is mandatory but keys cannot travel."""


class Suite(NamedTuple):
    name: str
    profile: int            # pylibsrtp.Policy.SRTP_PROFILE_*
    key_salt: int           # bytes of master key || master salt (inline key-salt)


P = pylibsrtp.Policy
#: The suites we take, best first: RFC 7714 §12 and §14 (AEAD, 12-byte
#: salts), RFC 4568 §6.2 and RFC 3711 §8.2 (AES-CM, 14-byte salts).
PREFERENCE = (
    Suite("AEAD_AES_256_GCM", P.SRTP_PROFILE_AEAD_AES_256_GCM, 32 + 12),
    Suite("AEAD_AES_128_GCM", P.SRTP_PROFILE_AEAD_AES_128_GCM, 16 + 12),
    Suite("AES_CM_128_HMAC_SHA1_80", P.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
    Suite("AES_CM_128_HMAC_SHA1_32", P.SRTP_PROFILE_AES128_CM_SHA1_32, 16 + 14),
)
SUITES = {s.name: s for s in PREFERENCE}

_TAG = re.compile(r"[0-9]{1,9}\Z")
_SUITE = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{1,88}={0,2}\Z")
_LIFETIME = re.compile(r"(2\^)?([0-9]{1,20})\Z")
_MKI = re.compile(r"([0-9]{1,20}):([0-9]{1,3})\Z")
_KDR = re.compile(r"KDR=([0-9]{1,2})\Z")
_WSH = re.compile(r"WSH=([0-9]{2,5})\Z")
_DECLARATIVE = ("UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTP", "UNAUTHENTICATED_SRTP")


class CryptoError(ValueError):
    """An ``a=crypto`` value that does not follow RFC 4568 §9; says why."""


def _show(text):
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


@dataclass(frozen=True)
class Crypto:
    """One ``a=crypto`` attribute, parsed; ``key`` is the decoded key-salt
    of its one inline key (``keys`` counts them: more than one needs MKIs)."""

    tag: int
    suite: str
    key: bytes
    keys: int = 1
    lifetime: Optional[int] = None
    mki: Optional[Tuple[int, int]] = None
    params: Tuple[str, ...] = ()

    def __repr__(self):                 # keys never go to a log
        return f"<Crypto {self.tag} {self.suite}>"


def parse_crypto(value):
    """RFC 4568 §9.1: ``tag 1*WSP suite 1*WSP key-params *(1*WSP param)``."""
    if value is None:
        raise CryptoError("a=crypto without a value")
    if len(value) > MAX_LENGTH:
        raise CryptoError(f"a=crypto longer than {MAX_LENGTH} characters")
    parts = value.split()
    if len(parts) < 3:
        raise CryptoError(f"a=crypto needs a tag, a suite and a key: {_show(value)}")
    tag, suite, key_params, params = parts[0], parts[1], parts[2], tuple(parts[3:])
    if not _TAG.match(tag):
        raise CryptoError(f"a=crypto tag {_show(tag)} is not 1 to 9 digits")
    if not _SUITE.match(suite):
        raise CryptoError(f"a=crypto suite {_show(suite)} is not a suite name")
    if len(params) > MAX_PARAMS:
        raise CryptoError(f"a=crypto with more than {MAX_PARAMS} session parameters")
    keys = key_params.split(";")
    key, lifetime, mki = _key_param(keys[0])
    for other in keys[1:]:
        _key_param(other)               # checked, not used (it would need MKIs)
    return Crypto(int(tag), suite, key, len(keys), lifetime, mki, params)


def _key_param(text):
    """RFC 4568 §9.2: ``inline:`` key-salt ["|" lifetime] ["|" mki]."""
    method, sep, info = text.partition(":")
    if not sep or method.lower() != "inline":
        raise CryptoError(f"a=crypto key method {_show(method)} is not inline")
    fields = info.split("|")
    if len(fields) > 3:
        raise CryptoError(f"a=crypto key {_show(info)} has more than 3 fields")
    if not _BASE64.match(fields[0]):
        raise CryptoError("a=crypto key-salt is not base64 (at most 88 characters)")
    try:
        padded = fields[0] + "=" * (-len(fields[0]) % 4)
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("a=crypto key-salt is not base64") from None
    lifetime = mki = None
    for field in fields[1:]:
        m = _MKI.match(field)
        if m and mki is None:
            if not 1 <= int(m.group(2)) <= 128:
                raise CryptoError(f"a=crypto MKI length {m.group(2)} is not 1 to 128")
            mki = (int(m.group(1)), int(m.group(2)))
            continue
        m = _LIFETIME.match(field)
        if not m or lifetime is not None or mki is not None:
            raise CryptoError(f"a=crypto lifetime/MKI {_show(field)} is not understood")
        exponent = int(m.group(2))
        if m.group(1) and exponent > 64:
            raise CryptoError(f"a=crypto lifetime 2^{exponent} is too large")
        lifetime = 2 ** exponent if m.group(1) else exponent
    return key, lifetime, mki


def unusable(crypto):
    """Why we do not take a well-formed line, or None if we do."""
    suite = SUITES.get(crypto.suite)
    if suite is None:
        return f"suite {crypto.suite} not supported"
    if len(crypto.key) != suite.key_salt:
        return f"{crypto.suite} key-salt of {len(crypto.key)} bytes, not {suite.key_salt}"
    if crypto.keys > 1 or crypto.mki is not None:
        return "MKI not supported"
    if crypto.lifetime == 0:
        return "key lifetime 0"
    for param in crypto.params:
        kdr = _KDR.match(param)
        if kdr:
            if int(kdr.group(1)):       # RFC 4568 §6.3.1, RFC 3711 §4.3.1: derive once
                return f"{param} not supported (only KDR=0)"
        elif param in _DECLARATIVE:     # RFC 4568 §6.3.2, §6.3.3: no weakened SRTP
            return f"{param} refused"
        elif _WSH.match(param) or param.startswith(("FEC_ORDER=", "FEC_KEY=", "-")):
            continue                    # §6.3.4-6.3.6: FEC (unused), a hint; optional
        else:                           # §6.3.7: one we do not know
            return f"session parameter {_show(param)} not understood"
    return None


def choose(values):
    """The best acceptable line among ``values`` (a=crypto values of one
    m= section, at most ``MAX_LINES`` read): (Crypto, None), or (None, why
    none is, short text for a Warning)."""
    found, whys = [], []
    for value in values[:MAX_LINES]:
        try:
            crypto = parse_crypto(value)
        except CryptoError as e:
            whys.append(str(e))
            continue
        why = unusable(crypto)
        if why is None:
            found.append(crypto)
        else:
            whys.append(why)
    if found:
        rank = [s.name for s in PREFERENCE]
        return min(found, key=lambda c: rank.index(c.suite)), None
    if not whys:
        return None, "no a=crypto line"
    return None, "; ".join(dict.fromkeys(whys))[:200]


def new_key(suite, random_bytes=os.urandom):
    """A fresh master key || salt for ``suite`` (RFC 4568 §6.1), never reused."""
    return random_bytes(SUITES[suite].key_salt)


def format_crypto(tag, suite, key):
    """The a=crypto value: ``TAG SUITE inline:KEYSALT`` (no lifetime, no MKI)."""
    return f"{tag} {suite} inline:{base64.b64encode(key).decode('ascii')}"


@dataclass(frozen=True)
class Keys:
    """SDES keys of one call: ``local`` protects what we send, ``remote``
    unprotects what we receive (RFC 4568 §7.1); ``tag`` the line chosen."""

    suite: str
    local: bytes
    remote: bytes
    tag: int = 1

    def __repr__(self):                 # keys never go to a log
        return f"<Keys {self.suite}>"


class SrtpError(Exception):
    """A packet libsrtp refused; ``reason``: "auth", "replay" or "malformed"."""

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _reason(error):
    text = str(error)
    if text.startswith("replay"):
        return "replay"
    if text.startswith("authentication"):
        return "auth"
    return "malformed"


def _session(suite, key, direction):
    policy = pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=SUITES[suite].profile)
    return pylibsrtp.Session(policy)


class SrtpContext:
    """One call's SRTP and SRTCP, both ways (RFC 3711 §3.2.3: a context per
    direction; libsrtp keeps one per SSRC, replay lists included).

    ``rekey`` after a re-INVITE keeps what did not change; a changed
    remote key keeps the old inbound context until the new key has
    authenticated one packet (packets sent before the answer arrived).
    libsrtp adds a stream per SSRC that authenticates; past ``MAX_SSRCS``
    the inbound context starts afresh, so a peer cycling SSRCs cannot
    grow it."""

    def __init__(self, keys):
        self.keys = None
        self._in = self._out = self._old_in = None
        self._ssrcs = set()
        self.rekey(keys)

    @property
    def suite(self):
        return self.keys.suite

    def rekey(self, keys):
        old = self.keys
        if old is None or (old.suite, old.local) != (keys.suite, keys.local):
            self._out = _session(keys.suite, keys.local, P.SSRC_ANY_OUTBOUND)
        if old is None or (old.suite, old.remote) != (keys.suite, keys.remote):
            self._old_in = self._in
            self._in = _session(keys.suite, keys.remote, P.SSRC_ANY_INBOUND)
            self._ssrcs.clear()
        self.keys = keys

    def protect_rtp(self, packet):
        return self._call(self._out.protect, packet)

    def protect_rtcp(self, packet):
        return self._call(self._out.protect_rtcp, packet)

    def unprotect_rtp(self, packet):
        return self._unprotect(packet, rtcp=False)

    def unprotect_rtcp(self, packet):
        return self._unprotect(packet, rtcp=True)

    def _unprotect(self, packet, rtcp):
        inbound = self._in.unprotect_rtcp if rtcp else self._in.unprotect
        try:
            plain = self._call(inbound, packet)
        except SrtpError as e:
            if e.reason != "auth" or self._old_in is None:
                raise
            old = self._old_in.unprotect_rtcp if rtcp else self._old_in.unprotect
            return self._call(old, packet)
        self._old_in = None             # the new key works: the old one is done
        ssrc = packet[4:8] if rtcp else packet[8:12]
        if ssrc not in self._ssrcs:     # authenticated: only the key holder gets here
            if len(self._ssrcs) >= MAX_SSRCS:
                self._in = _session(self.keys.suite, self.keys.remote, P.SSRC_ANY_INBOUND)
                self._ssrcs.clear()
            self._ssrcs.add(ssrc)
        return plain

    @staticmethod
    def _call(method, packet):
        try:
            return method(bytes(packet))
        except pylibsrtp.Error as e:
            raise SrtpError(_reason(e), str(e)) from None
        except ValueError as e:         # longer than libsrtp's buffer
            raise SrtpError("malformed", str(e)) from None
