"""Per-source budgets: what one source address may ask of us, and hold.

Every global bound (capacity, conferences, subscriptions) is a resource
one source could take whole; these budgets keep a share for the others
(docs/design.md, "Bounded under abuse").  A *source* is the address a
request came from: the host for IPv4, its /64 for IPv6 (one subscriber
line holds a whole /64).  A port is no identity: anyone picks a new one.

- ``rate``: a token bucket per source (``rate`` requests per second,
  ``burst`` at once).  Beyond it a source is *over*: its first request in
  each second gets REFUSE (the caller answers 503 with ``retry_after``,
  RFC 3261 §21.5.4), the others DROP.  A source is over until a request
  finds a token again; ``episode`` says when one begins, so it can be
  logged once.
- ``spend(source, amount)``: the same bucket for an amount (NOTIFY bytes
  to an address), without refusals.
- ``hold(kind, source)``: the count a source holds of one kind (calls,
  subscriptions, rooms) against its limit; a ``Hold`` gives it back once.

The tables are bounded: a bucket that has refilled is the same as none
and goes first; when ``max_sources`` buckets are all in use, any other
source shares one bucket (so a spray of sources throttles itself).
Counts held are bounded by the global bounds they sit under.  Every limit
of 0 means none.  Sans-IO: time from ``now()``.
"""

import collections
import enum
import ipaddress
import math

__all__ = ["Verdict", "SourceBudgets", "Hold", "source_key", "request_budgets"]

OTHERS = "other sources"


class Verdict(enum.Enum):
    ADMIT = "admit"
    REFUSE = "refuse"           # answer 503 with Retry-After
    DROP = "drop"               # say nothing


def source_key(host):
    """The key a source address is counted under: IPv4 host, IPv6 /64."""
    if ":" not in host:
        return host
    try:
        net = ipaddress.IPv6Network((host.strip("[]"), 64), strict=False)
    except ValueError:
        return host
    return str(net)


class _Bucket:
    __slots__ = ("tokens", "stamp", "over", "refused_at")

    def __init__(self, tokens, stamp):
        self.tokens = tokens
        self.stamp = stamp
        self.over = False           # in an episode of refusals
        self.refused_at = None      # when it was last answered 503


class Hold:
    """One unit a source holds; ``release`` gives it back (once)."""

    __slots__ = ("_budgets", "kind", "key")

    def __init__(self, budgets, kind, key):
        self._budgets, self.kind, self.key = budgets, kind, key

    def release(self):
        if self._budgets is not None:
            self._budgets._release(self.kind, self.key)
            self._budgets = None


class SourceBudgets:
    """The request rate and the holdings of every source."""

    def __init__(self, now, rate=0, burst=0, limits=None, max_sources=10000):
        self.now = now
        self.rate = rate
        self.burst = max(burst, 1) if rate else 0
        #: kind -> most one source may hold (0: no limit)
        self.limits = dict(limits or {})
        self.max_sources = max_sources
        self._buckets = collections.OrderedDict()   # key -> _Bucket, least recent first
        self._held = {kind: {} for kind in self.limits}     # kind -> key -> count
        self.episode = False        # did the last ``request`` begin an episode?

    # -- the request rate --------------------------------------------------

    @property
    def retry_after(self):
        """Seconds after which a refused source has half its burst back."""
        return max(1, math.ceil(self.burst / 2 / self.rate)) if self.rate else 0

    def request(self, host):
        """The verdict on one more request from ``host``."""
        self.episode = False
        if not self.rate:
            return Verdict.ADMIT
        now = self.now()
        bucket = self._refilled(host, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            bucket.over = False
            return Verdict.ADMIT
        if not bucket.over:
            bucket.over = self.episode = True
        if bucket.refused_at is None or now - bucket.refused_at >= 1.0:
            bucket.refused_at = now
            return Verdict.REFUSE
        return Verdict.DROP

    def spend(self, host, amount):
        """Take ``amount`` (bytes, say) from ``host``'s bucket if it has that
        much, or is full (so one item larger than the burst still goes,
        once); False, taking nothing, otherwise."""
        if not self.rate:
            return True
        bucket = self._refilled(host, self.now())
        if bucket.tokens >= min(amount, self.burst):
            bucket.tokens -= amount
            return True
        return False

    def _refilled(self, host, now):
        """``host``'s bucket, with what it earned since it was last used."""
        bucket = self._bucket(source_key(host), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        return bucket

    def _bucket(self, key, now):
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is not None:
            buckets.move_to_end(key)
            return bucket
        while buckets:                  # a refilled bucket is the same as none
            oldest = next(iter(buckets.values()))
            if oldest.tokens + (now - oldest.stamp) * self.rate < self.burst:
                break
            buckets.popitem(last=False)
        if len(buckets) >= self.max_sources:
            key = OTHERS
            bucket = buckets.get(key)
            if bucket is not None:
                buckets.move_to_end(key)
                return bucket
        bucket = buckets[key] = _Bucket(self.burst, now)
        return bucket

    # -- what a source holds -------------------------------------------------

    def hold(self, kind, host):
        """A ``Hold`` of one more ``kind`` for ``host``, or None if that
        source holds its limit already."""
        limit = self.limits.get(kind, 0)
        key = source_key(host)
        held = self._held.setdefault(kind, {})
        count = held.get(key, 0)
        if limit and count >= limit:
            return None
        held[key] = count + 1
        return Hold(self, kind, key)

    def held(self, kind, host):
        return self._held.get(kind, {}).get(source_key(host), 0)

    def _release(self, kind, key):
        held = self._held[kind]
        count = held.get(key, 0) - 1
        if count > 0:
            held[key] = count
        else:
            held.pop(key, None)

    @property
    def sources(self):
        """Buckets in the table (bounded by ``max_sources`` + 1)."""
        return len(self._buckets)


def request_budgets(config, now):
    """The budgets ``[limits]`` gives each source: its request rate and
    the calls, subscriptions and rooms it may hold."""
    return SourceBudgets(now, config.requests_per_second, config.request_burst,
                         limits={"calls": config.calls_per_source,
                                 "subscriptions": config.subscriptions_per_source,
                                 "rooms": config.rooms_per_source},
                         max_sources=config.budget_sources)
