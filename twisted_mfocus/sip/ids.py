"""Fresh identifiers: Via branches, tags and Call-IDs (RFC 3261 §8.1.1.4,
§8.1.1.7, §19.3).  Random enough to be globally unique, cheap to make."""

import os

__all__ = ["MAGIC_COOKIE", "new_branch", "new_tag", "new_call_id"]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this.
MAGIC_COOKIE = "z9hG4bK"


def _token(nbytes):
    return os.urandom(nbytes).hex()         # a token (§25.1) of 2 * nbytes characters


def new_branch():
    return MAGIC_COOKIE + _token(10)


def new_tag():
    return _token(5)


def new_call_id(host=None):
    token = _token(10)
    return f"{token}@{host}" if host else token
