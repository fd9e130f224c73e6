"""SDES keys in the offer/answer (RFC 4568 §7): which keys our answer
carries under the focus's SRTP policy, the a=crypto lines of our offer,
and the keys an answer to our offer gives.

Sans-IO: text in, srtp.Keys out.  A refusal is ``Refused`` with a short
reason (a reason phrase) and a longer text for the Warning header; sdp.py
turns it into its SDPError (488 for an offer we cannot take, 400 for an
answer that does not fit our offer).
"""

from . import srtp

__all__ = ["Refused", "answer_keys", "answered_keys", "offer_lines"]


class Refused(Exception):
    """Keys that cannot be had: ``reason``, ``warning``, ``acceptable``
    (False: the peer's SDP is wrong, not merely unacceptable)."""

    def __init__(self, reason, warning=None, acceptable=True):
        super().__init__(reason)
        self.reason, self.warning, self.acceptable = reason, warning or reason, acceptable


def answer_keys(proto, offered, transport, policy, random_bytes):
    """The SRTP keys for accepting a stream of profile ``proto`` whose
    a=crypto values are ``offered`` (None: plain) and the a=crypto value
    of our answer.  ``policy`` (srtp.Policy): ``[media] srtp`` and where
    keys may travel (RFC 4568 §8.3)."""
    secure = proto in srtp.SECURE_PROFILES
    mandatory = policy.mode is srtp.Mode.MANDATORY
    if policy.mode is srtp.Mode.OFF:
        if secure:
            raise Refused("SRTP is off here", f"SRTP is off at this focus ([media] srtp = "
                                              f"off): {proto} is refused, offer RTP/AVP")
        return None, None               # best-effort crypto lines are ignored
    if not (secure or offered):
        if mandatory:
            raise Refused("SRTP required", "this focus takes SRTP only ([media] srtp = "
                                           "mandatory): offer RTP/SAVP with a=crypto (RFC 4568)")
        return None, None
    if not policy.keys_may_travel(transport):
        if not (secure or mandatory):   # best-effort SRTP: answered plain, keys unsent
            return None, None
        raise Refused("SDES keys need TLS",
                      f"SDES keys need TLS (RFC 4568 section 8.3): this request came "
                      f"over {transport}, so {proto} with keys is refused")
    chosen, why = srtp.choose(offered)
    if chosen is None:
        if not (secure or mandatory):
            return None, None
        raise Refused("no acceptable crypto suite",
                      f"no acceptable crypto suite in the {proto} offer: {why}")
    ours = srtp.new_key(chosen.suite, random_bytes)
    keys = srtp.Keys(chosen.suite, local=ours, remote=chosen.key, tag=chosen.tag)
    return keys, srtp.format_crypto(chosen.tag, chosen.suite, ours)


def offer_lines(random_bytes):
    """One a=crypto value per suite we take, best first, fresh keys (§7.1.1)."""
    return [srtp.format_crypto(tag, suite.name, srtp.new_key(suite.name, random_bytes))
            for tag, suite in enumerate(srtp.PREFERENCE, 1)]


def _show(text):
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def answered_keys(proto, ours, theirs):
    """The keys of an answer whose a=crypto values are ``theirs`` to our
    stream of profile ``proto`` that offered ``ours`` (None: plain)."""
    mine = {}
    for value in ours:
        crypto = srtp.parse_crypto(value)       # our own lines: well-formed
        mine[crypto.tag] = crypto
    if not mine:
        return None
    if not theirs:
        if proto in srtp.SECURE_PROFILES:
            raise Refused(f"answer to our {proto} offer has no a=crypto line",
                          acceptable=False)
        return None                             # best-effort SRTP declined
    try:
        crypto = srtp.parse_crypto(theirs[0])
    except srtp.CryptoError as e:
        raise Refused(f"answer has a bad a=crypto line: {e}", acceptable=False) from None
    offered = mine.get(crypto.tag)
    why = srtp.unusable(crypto)
    if offered is None or offered.suite != crypto.suite or why:
        raise Refused(f"answer's a=crypto {crypto.tag} {_show(crypto.suite)} does not "
                      f"fit our offer" + (f" ({why})" if why else ""), acceptable=False)
    return srtp.Keys(crypto.suite, local=offered.key, remote=crypto.key, tag=crypto.tag)
