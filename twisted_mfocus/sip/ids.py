"""Fresh identifiers: Via branches, tags and Call-IDs (RFC 3261 §8.1.1.4,
§8.1.1.7, §19.3).  Random enough to be globally unique, cheap to make."""

import os

__all__ = ["MAGIC_COOKIE", "new_branch", "new_tag", "new_call_id"]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this.
MAGIC_COOKIE = "z9hG4bK"


class _Pool:
    """os.urandom read POOL bytes at a time: one system call per few hundred
    ids instead of one each (the same kernel randomness, §19.3's 32 bits
    and more in every tag)."""

    POOL = 4096

    def __init__(self):
        self._bytes, self._at = b"", 0

    def take(self, n):
        at = self._at
        if at + n > len(self._bytes):
            self._bytes, at = os.urandom(self.POOL), 0
        self._at = at + n
        return self._bytes[at:at + n]


_pool = _Pool()
# A forked child must not hand out its parent's ids.
os.register_at_fork(after_in_child=lambda: _pool.__init__())


def _token(nbytes):
    return _pool.take(nbytes).hex()         # a token (§25.1) of 2 * nbytes characters


def new_branch():
    return MAGIC_COOKIE + _token(10)


def new_tag():
    return _token(5)


def new_call_id(host=None):
    token = _token(10)
    return f"{token}@{host}" if host else token
