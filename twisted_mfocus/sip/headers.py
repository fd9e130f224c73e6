"""Header fields: names and the header list (typed values: ``values.py``).

Rules of this module:

- A header value is kept as the text that arrived (folding undone,
  surrounding whitespace stripped); typed parsing happens on first access
  and is cached until the header list changes ("scan eagerly, parse
  lazily").  Unknown headers are never interpreted, so they go out exactly
  as they came in; a section nobody changed goes out as the text it came
  as when that is what writing its fields would give (the usual case: one
  string instead of one per field).
- Names are case-insensitive and compact forms are expanded
  (RFC 3261 §7.3.3, §20; RFC 3265, RFC 3515, RFC 3892, RFC 4028).
- Only headers whose grammar is a comma list are split on commas, and only
  on commas outside quotes and angle brackets (§7.3.1).
"""

import re
import sys

from .values import is_token, split_outside

__all__ = ["Headers", "canonical_name", "split_list", "unfold", "COMPACT", "LIST_HEADERS",
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
#: Names, as they arrive, that are their own spelling: a line ``Name: value``
#: of one (one space, no other blank around the value) is written back as
#: it came, so an unchanged header section can be sent as its raw text.
_SPELLED = {}


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
    # Interned keys: a lookup in a key list then compares by identity.
    low = name.lower()
    canon = _CANONICAL.get(low)
    if canon is None:
        return sys.intern(low), name
    return sys.intern(canon.lower()), canon


_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")


def unfold(text):
    """Undo line folding (§7.3.1): a continuation joins with one SP."""
    return _FOLD.sub(" ", text)


def split_list(value):
    """Split on commas outside quoted strings and ``<...>`` (§7.3.1)."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    return [part.strip() for part in split_outside(value, ",", brackets=True)[0]]


_CONTENT_LENGTH = sys.intern("content-length")


def _split_line(line):
    """((key, spelling), value) of a header line, or (None, None) if it is
    not ``token: value`` (§7.3.1: blanks may precede the colon).  A line
    named Content-Length without a colon still counts as one (value "")."""
    name, colon, value = line.partition(":")
    if not colon:
        if name.rstrip(" \t").lower() in ("content-length", "l"):
            return canonical_name("l"), ""
        return None, None
    hit = _NAME_CACHE.get(name)
    if hit is None:
        stripped = name.rstrip(" \t")
        if not is_token(stripped):
            return None, None
        hit = canonical_name(stripped)
        if len(_NAME_CACHE) < 4096:
            _NAME_CACHE[name] = hit
    if hit[1] == name and name not in _SPELLED and len(_SPELLED) < 4096:
        _SPELLED[name] = hit
    return hit, value.strip(" \t")


def split_section(text):
    """(Headers, Content-Length values) of a header section: its lines
    joined by CRLF, without the start line.  The Content-Length lines are
    taken out (framing, §18.3); a line that is not ``token: value`` is left
    out and noted in ``malformed`` (``Message.validate`` reports it)."""
    headers = Headers()
    return headers, headers._split(text)


# -- the header list -----------------------------------------------------------


class Headers:
    """Ordered header fields of one message.

    Kept as three parallel lists: ``key`` (the lower-case long name: what
    lookups compare, interned), ``name`` (the spelling to emit) and
    ``value`` (the text).  A lookup is a C-level scan of the keys (a message
    has a dozen or two); typed views are cached per key and dropped when it
    changes.  A parsed section also keeps its text until the first change:
    it is written as it came when that is what writing the fields gives
    (``_plain``: one string instead of one per field), or while nobody has
    read the fields (odd spellings and blanks then go out byte for byte).
    """

    __slots__ = ("_keys", "_names", "_vals", "_raw", "_plain", "_looked", "_cache",
                 "malformed")

    def __init__(self, items=None):
        if items:
            self._keys = [i[0] for i in items]
            self._names = [i[1] for i in items]
            self._vals = [i[2] for i in items]
        else:
            self._keys, self._names, self._vals = [], [], []
        #: The header section as it came (folding undone), until a change.
        self._raw = None
        #: Whether writing the fields gives back ``_raw`` exactly.
        self._plain = False
        #: Whether anyone has read the fields (else ``_raw`` is written).
        self._looked = True
        self._cache = {}
        #: Why a line was left out when the raw lines were split (None: none).
        self.malformed = None

    def _split(self, text):
        """Fill the fields from a section's text; return its Content-Length
        values (see ``split_section``)."""
        # Locals for what the loop uses: it runs once per header line.
        add_key, add_name, add_value = self._keys.append, self._names.append, self._vals.append
        spelled, content_length = _SPELLED.get, _CONTENT_LENGTH
        plain = True
        lengths, taken = [], []
        lines = text.split("\r\n")
        for line in lines:
            name, sep, value = line.partition(": ")
            hit = spelled(name) if sep else None
            if hit is not None:
                stripped = value.strip(" \t")
                if stripped is not value:       # CPython: unchanged gives itself
                    plain = False
            else:
                plain = False
                if line[:1] in (" ", "\t"):    # a continuation: unfold them all
                    self.__init__()
                    return self._split(unfold(text))
                hit, stripped = _split_line(line)
                if hit is None:
                    self.malformed = "Malformed header line"
                    continue
            key = hit[0]
            if key is content_length:
                lengths.append(stripped)
                taken.append(line)
                continue
            add_key(key)
            add_name(hit[1])
            add_value(stripped)
        self._looked = False
        self._plain = plain
        if not taken:
            self._raw = text
        elif len(lines) == 1:
            self._raw = None
        elif len(taken) == 1 and lines[-1] is taken[0]:
            self._raw = text[:len(text) - len(taken[0]) - 2]     # the usual: it came last
        else:
            ids = {id(line) for line in taken}
            self._raw = "\r\n".join([line for line in lines if id(line) not in ids]) or None
        return lengths

    def keys(self):
        """The key of each field, in order (read only)."""
        if not self._looked:
            self._look()
        return self._keys

    def fields(self):
        """(keys, values): the key and the value of each field, in order
        (read only)."""
        if not self._looked:
            self._look()
        return self._keys, self._vals

    def _look(self):
        self._looked = True
        if not self._plain:
            self._raw = None        # the fields are written from now on

    @property
    def _items(self):
        """(key, name, value) of each field, in order."""
        return list(zip(self.keys(), self._names, self._vals))

    def _changed(self, key):
        self._raw = None                # the fields are the truth now
        self._cache.pop(key, None)

    @classmethod
    def from_pairs(cls, pairs):
        h = cls()
        for name, value in pairs:
            h.add(name, value)
        return h

    def __iter__(self):
        """(name, value) pairs in order."""
        self.keys()
        return zip(self._names, self._vals)

    def __len__(self):
        return len(self.keys())

    def __contains__(self, name):
        return canonical_name(name)[0] in self.keys()

    def key_counts(self):
        """How many fields of each (lower-case long) name."""
        counts = {}
        for key in self.keys():
            counts[key] = counts.get(key, 0) + 1
        return counts

    def __eq__(self, other):
        if not isinstance(other, Headers):
            return NotImplemented
        return self.keys() == other.keys() and self._vals == other._vals

    def copy(self):
        self.keys()
        h = Headers()
        h._keys, h._names, h._vals = list(self._keys), list(self._names), list(self._vals)
        return h

    def get(self, name, default=None):
        """The first value of ``name`` as text (not split)."""
        key = canonical_name(name)[0]
        keys = self.keys()
        return self._vals[keys.index(key)] if key in keys else default

    def get_all(self, name):
        """Every value of ``name``: list headers are split on commas."""
        return self._values(canonical_name(name)[0])

    def _values(self, key):
        keys = self.keys()
        n = keys.count(key)
        if n == 1:
            value = self._vals[keys.index(key)]
            if key in LIST_HEADERS:
                return split_list(value)
            return [value]
        if n == 0:
            return []
        values = [v for k, v in zip(keys, self._vals) if k == key]
        if key in LIST_HEADERS:
            return [part for value in values for part in split_list(value)]
        return values

    def lines(self, name):
        """Every header line of ``name`` as it came (not split)."""
        key = canonical_name(name)[0]
        return [v for k, v in zip(self.keys(), self._vals) if k == key]

    def count(self, name):
        return self.keys().count(canonical_name(name)[0])

    def add(self, name, value, first=False):
        key, spelling = canonical_name(name)
        keys = self.keys()
        at = 0 if first else len(keys)
        keys.insert(at, key)
        self._names.insert(at, spelling)
        self._vals.insert(at, str(value))
        self._changed(key)

    def set(self, name, value):
        """Replace every ``name`` with one value, kept where the first was."""
        key, spelling = canonical_name(name)
        keys = self.keys()
        if key in keys:
            at = keys.index(key)
            self._names[at], self._vals[at] = spelling, str(value)
            self._drop(key, at + 1)
        else:
            keys.append(key)
            self._names.append(spelling)
            self._vals.append(str(value))
        self._changed(key)

    def remove(self, name):
        key = canonical_name(name)[0]
        self.keys()
        self._drop(key, 0)
        self._changed(key)

    def _drop(self, key, start):
        """Remove the fields of ``key`` from position ``start`` on."""
        keys = self._keys
        if key in keys[start:]:
            kept = [i for i, k in enumerate(keys) if i < start or k != key]
            self._keys = [keys[i] for i in kept]
            self._names = [self._names[i] for i in kept]
            self._vals = [self._vals[i] for i in kept]

    def pop_first_value(self, name):
        """Remove and return the first comma-separated value of a list header
        (e.g. the top Via or the top Route)."""
        key = canonical_name(name)[0]
        keys = self.keys()
        if key not in keys:
            return None
        at = keys.index(key)
        values = split_list(self._vals[at])
        first = values[0]
        if len(values) > 1:
            self._vals[at] = ", ".join(values[1:])
        else:
            del keys[at], self._names[at], self._vals[at]
        self._changed(key)
        return first

    def typed(self, name, parse):
        """All values of ``name`` parsed by ``parse``, cached."""
        cache = self._cache
        cached = cache.get(name)        # most callers pass the key itself
        if cached is None:
            name = canonical_name(name)[0]
            cached = cache.get(name)
        # ``==``, not ``is``: ``Via.parse`` is a new bound method each time.
        if cached is not None and cached[0] == parse:
            return cached[1]
        values = [parse(v) for v in self._values(name)]
        cache[name] = (parse, values)
        return values

    def check(self, key, parse, shape):
        """Check every value of ``key`` (a lower-case long name) against its
        grammar, building nothing for the common shape: ``shape(text)``
        matches it, and ``typed`` parses it when someone asks.  Any other
        value makes ``typed(key, parse)`` parse them all now, raising the
        ParseError of a bad one.

        Returns whether ``key`` has any value (a list header may be empty)."""
        cached = self._cache.get(key)
        if cached is not None and cached[0] == parse:
            return bool(cached[1])
        values = self._values(key)
        for value in values:
            if shape(value) is None:
                return bool(self.typed(key, parse))
        return bool(values)

    def seed_typed(self, name, parse, values):
        """Record ``values`` as what ``typed(name, parse)`` gives now: for a
        caller that rewrote a header and already holds its parsed form."""
        self._cache[canonical_name(name)[0]] = (parse, values)

    def release_parsed(self):
        """Drop the cached typed views (they are rebuilt on next access) and
        the section's text (writing the fields gives the same).

        A completed transaction keeps its request for 32 s; without its
        parsed views it costs half the memory and half the GC work."""
        self._cache.clear()
        if self._looked:
            self._raw = None

    def written_from_fields(self):
        """Whether ``serialize_into`` writes each field as ``Name: value``
        (names spelled canonically), not lines nobody has read."""
        return self._raw is None or self._plain or self._looked

    def serialize_into(self, out):
        raw = self._raw
        if raw is not None and (self._plain or not self._looked):
            # Unchanged, and written the same or never read: the lines as
            # they came (unfolded), byte for byte.
            out.append(raw)
            out.append("\r\n")
        else:
            out.extend([f"{name}: {value}\r\n" for name, value in zip(self._names, self._vals)])
