"""Header fields: names and the header list (typed values: ``values.py``).

Rules of this module:

- A header value is kept as the text that arrived (folding undone,
  surrounding whitespace stripped); typed parsing happens on first access
  and is cached until the header list changes ("scan eagerly, parse
  lazily").  Unknown headers are never interpreted, so they go out exactly
  as they came in.
- Names are case-insensitive and compact forms are expanded
  (RFC 3261 §7.3.3, §20; RFC 3265, RFC 3515, RFC 3892, RFC 4028).
- Only headers whose grammar is a comma list are split on commas, and only
  on commas outside quotes and angle brackets (§7.3.1).
"""

from .values import is_token, split_outside

__all__ = ["Headers", "canonical_name", "split_list", "COMPACT", "LIST_HEADERS",
           "SINGLE_HEADERS"]

# Compact forms (RFC 3261 §7.3.3 and the RFCs that define the others).
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding",
    "l": "content-length", "c": "content-type", "f": "from", "s": "subject",
    "k": "supported", "t": "to", "v": "via", "o": "event", "r": "refer-to",
    "b": "referred-by", "u": "allow-events", "x": "session-expires",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition",
    "y": "identity", "n": "identity-info",
}

_CANONICAL = {
    k.lower(): k for k in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
        "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
        "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
        "Error-Info", "Event", "Expires", "From", "In-Reply-To", "Max-Forwards",
        "Min-Expires", "MIME-Version", "Organization", "Priority",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
        "Reason", "Record-Route", "Refer-To", "Referred-By", "Replaces",
        "Reply-To", "Require", "Retry-After", "Route", "RSeq", "Server",
        "Session-Expires", "Subject", "Subscription-State", "Supported",
        "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
        "WWW-Authenticate", "Path", "Min-SE", "Refer-Sub", "Target-Dialog",
        "Accept-Contact", "Reject-Contact", "Request-Disposition",
        "Identity", "Identity-Info", "Last-Notify-Version",
    )
}
_CANONICAL.update({k: _CANONICAL[v] for k, v in COMPACT.items()})

#: Headers whose grammar is ``1#value``: may be split on commas (§7.3.1).
LIST_HEADERS = frozenset((
    "accept", "accept-encoding", "accept-language", "alert-info", "allow",
    "allow-events", "call-info", "contact", "content-encoding",
    "content-language", "error-info", "in-reply-to", "proxy-require",
    "record-route", "require", "route", "supported", "unsupported", "via",
    "warning", "path", "reason",
))

#: Headers that may appear at most once (RFC 4475 §3.3.8).
SINGLE_HEADERS = frozenset((
    "call-id", "cseq", "from", "to", "max-forwards", "content-length",
    "content-type", "expires",
))


_NAME_CACHE = {}


def canonical_name(name):
    """(key, spelling): the lower-case long-form key and the name to emit.

    Unknown names keep the spelling they arrived with.  Memoized: the same
    few dozen spellings come by on every message.
    """
    hit = _NAME_CACHE.get(name)
    if hit is not None:
        return hit
    result = _canonical_name(name)
    if len(_NAME_CACHE) < 4096:      # bounded: names are attacker-chosen
        _NAME_CACHE[name] = result
    return result


def _canonical_name(name):
    low = name.lower()
    canon = _CANONICAL.get(low)
    if canon is None:
        return low, name
    return canon.lower(), canon


def split_list(value):
    """Split on commas outside quoted strings and ``<...>`` (§7.3.1)."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    return [part.strip() for part in split_outside(value, ",", brackets=True)[0]]


# -- the header list -----------------------------------------------------------


class Headers:
    """Ordered header fields of one message.

    Each entry is ``[key, name, value]``: ``key`` the lower-case long name,
    ``name`` the spelling to emit, ``value`` the text.  Typed views are
    cached per key and dropped when that key changes.
    """

    __slots__ = ("_list", "_raw", "_cache", "malformed")

    def __init__(self, items=None, raw=None):
        self._list = items if items is not None or raw is not None else []
        #: The header lines as the parser found them (folding undone), until
        #: the headers are first used: scan eagerly, parse lazily.
        self._raw = raw
        self._cache = {}
        #: Why a line was left out when the raw lines were split (None: none).
        self.malformed = None

    @property
    def _items(self):
        items = self._list
        if items is None:
            items = self._list = self._split_raw()
            self._raw = None
        return items

    def _split_raw(self):
        """Name/value of each raw line; a line that is not ``token: value``
        is left out and noted in ``malformed`` (``validate`` reports it)."""
        items = []
        cache = _NAME_CACHE
        for line in self._raw:
            name, colon, value = line.partition(":")
            hit = cache.get(name)
            if hit is None:
                stripped = name.rstrip(" \t")
                if not colon or not is_token(stripped):
                    self.malformed = "Malformed header line"
                    continue
                hit = canonical_name(stripped)
                if len(cache) < 4096:
                    cache[name] = hit
            items.append([hit[0], hit[1], value.strip(" \t")])
        return items

    @_items.setter
    def _items(self, value):
        self._list = value
        self._raw = None

    @classmethod
    def from_pairs(cls, pairs):
        h = cls()
        for name, value in pairs:
            h.add(name, value)
        return h

    def __iter__(self):
        """(name, value) pairs in order."""
        for _, name, value in self._items:
            yield name, value

    def __len__(self):
        return len(self._items)

    def __contains__(self, name):
        key = canonical_name(name)[0]
        for item in self._items:
            if item[0] == key:
                return True
        return False

    def key_counts(self):
        """How many fields of each (lower-case long) name, in one pass."""
        counts = {}
        for item in self._items:
            key = item[0]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def __eq__(self, other):
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def copy(self):
        return Headers([list(i) for i in self._items])

    def get(self, name, default=None):
        """The first value of ``name`` as text (not split)."""
        key = canonical_name(name)[0]
        for item in self._items:
            if item[0] == key:
                return item[2]
        return default

    def get_all(self, name):
        """Every value of ``name``: list headers are split on commas."""
        key = canonical_name(name)[0]
        out = []
        if key in LIST_HEADERS:
            for item in self._items:
                if item[0] == key:
                    out.extend(split_list(item[2]))
        else:
            for item in self._items:
                if item[0] == key:
                    out.append(item[2])
        return out

    def lines(self, name):
        """Every header line of ``name`` as it came (not split)."""
        key = canonical_name(name)[0]
        return [item[2] for item in self._items if item[0] == key]

    def count(self, name):
        key = canonical_name(name)[0]
        return sum(1 for item in self._items if item[0] == key)

    def add(self, name, value, first=False):
        key, spelling = canonical_name(name)
        item = [key, spelling, str(value)]
        if first:
            self._items.insert(0, item)
        else:
            self._items.append(item)
        self._cache.pop(key, None)

    def set(self, name, value):
        """Replace every ``name`` with one value, kept where the first was."""
        key, spelling = canonical_name(name)
        value = str(value)
        for idx, item in enumerate(self._items):
            if item[0] == key:
                self._items[idx] = [key, spelling, value]
                self._items[idx + 1:] = [i for i in self._items[idx + 1:] if i[0] != key]
                break
        else:
            self._items.append([key, spelling, value])
        self._cache.pop(key, None)

    def remove(self, name):
        key = canonical_name(name)[0]
        self._items = [i for i in self._items if i[0] != key]
        self._cache.pop(key, None)

    def pop_first_value(self, name):
        """Remove and return the first comma-separated value of a list header
        (e.g. the top Via or the top Route)."""
        key = canonical_name(name)[0]
        for idx, item in enumerate(self._items):
            if item[0] == key:
                values = split_list(item[2])
                first = values[0]
                if len(values) > 1:
                    item[2] = ", ".join(values[1:])
                else:
                    del self._items[idx]
                self._cache.pop(key, None)
                return first
        return None

    def typed(self, name, parse):
        """All values of ``name`` parsed by ``parse``, cached."""
        key = canonical_name(name)[0]
        cached = self._cache.get(key)
        # ``==``, not ``is``: ``Via.parse`` is a new bound method each time.
        if cached is not None and cached[0] == parse:
            return cached[1]
        values = [parse(v) for v in self.get_all(key)]
        self._cache[key] = (parse, values)
        return values

    def seed_typed(self, name, parse, values):
        """Record ``values`` as what ``typed(name, parse)`` gives now: for a
        caller that rewrote a header and already holds its parsed form."""
        self._cache[canonical_name(name)[0]] = (parse, values)

    def release_parsed(self):
        """Drop the cached typed views (they are rebuilt on next access).

        A completed transaction keeps its request for 32 s; without its
        parsed views it costs half the memory and half the GC work."""
        self._cache.clear()

    def serialize_into(self, out):
        if self._list is None:
            # Never looked at: write the lines as they came, byte for byte.
            if self._raw:
                out.append("\r\n".join(self._raw))
                out.append("\r\n")
        else:
            out.extend([f"{name}: {value}\r\n" for _, name, value in self._list])
