"""Where the management API may listen (``[focus] http`` / ``--http``).

The endpoint is a Twisted strports description (``tcp:8080``,
``tcp:8080:interface=127.0.0.1``, ``tcp6:8080:interface=\\:\\:1``,
``ssl:8443:privateKey=k.pem``, ``unix:/run/mfocus.sock``).  Without an API
token (``[http] token_file``) nobody is asked who they are, so the API may
only be reachable from this machine: a network endpoint with no interface
binds loopback (the description gets ``interface=127.0.0.1``, or ``::1``
for ``tcp6``), one naming another address is refused, and so is any
endpoint type whose address cannot be read here (``systemd:``, plugins).
A ``unix:`` socket is a file: its mode and directory decide who reaches it.
With a token, the description is used as it is.
"""

import ipaddress

from ..config import ConfigError

__all__ = ["api_endpoint", "parse_description"]

#: Endpoint type -> (position of ``interface`` among the positional
#: arguments, counting the type as 0; the loopback address to bind when it
#: is absent: tcp and ssl would bind 0.0.0.0, tcp6 ::).  As twisted.internet.endpoints
#: parses them: ``tcp``/``ssl``/``unix`` exactly, plugin types (``tcp6``)
#: whatever their case.
_NETWORK = {
    "tcp": (2, "127.0.0.1"),
    "ssl": (5, "127.0.0.1"),
    "tcp6": (3, "::1"),
}
_LOCAL = ("unix",)


def parse_description(description):
    """``(args, kwargs)`` of a strports description, split as
    ``twisted.internet.endpoints`` splits it: ``:`` between arguments, the
    first ``=`` of an argument makes it ``key=value``, a backslash escapes
    the next character.  ValueError for a trailing backslash."""
    args, kw = [], {}
    parts, current = [], []          # parts of the argument being read
    chars = iter(description)
    ops = ":="
    for c in chars:
        if c in ops:
            parts.append("".join(current))
            current = []
            if c == ":":
                _add(parts, args, kw)
                parts, ops = [], ":="
            else:
                ops = ":"                # the value may hold more '='
        elif c == "\\":
            try:
                current.append(next(chars))
            except StopIteration:
                raise ValueError("ends with a backslash") from None
        else:
            current.append(c)
    parts.append("".join(current))
    _add(parts, args, kw)
    return args, kw


def _add(parts, args, kw):
    if len(parts) == 1:
        args.append(parts[0])
    else:
        kw[parts[0]] = parts[1]


def _is_loopback(text):
    try:
        address = ipaddress.ip_address(text.partition("%")[0])    # ::1%lo
    except ValueError:
        return False                     # a host name, or all addresses ("")
    if address.version == 4:
        return address in ipaddress.ip_network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def api_endpoint(description, token):
    """The strports description to listen on for ``--http description``.

    With a ``token`` (the API asks every request for it): ``description``
    unchanged.  Without: the description bound to loopback only (see the
    module docstring); ConfigError, naming ``--http`` and the address, when
    it would listen elsewhere."""
    if token:
        return description
    refuse = f"--http {description}"
    why = "without [http] token_file the API listens on loopback only"
    try:
        args, kw = parse_description(description)
    except ValueError as e:
        raise ConfigError(f"{refuse}: not an endpoint description ({e})")
    kind = args[0]
    if kind in _LOCAL:
        return description
    if kind.lower() == "tcp6":
        kind = "tcp6"                    # a plugin type: matched whatever its case
    if kind not in _NETWORK:
        raise ConfigError(f"{refuse}: {why}, and where a {kind}: endpoint listens "
                          "cannot be told (use tcp:, tcp6:, ssl: or unix:)")
    position, loopback = _NETWORK[kind]
    if "interface" in kw:
        interface = kw["interface"]
    elif len(args) > position:
        interface = args[position]
    else:
        return description + ":interface=" + loopback.replace(":", "\\:")
    if _is_loopback(interface):
        return description
    shown = interface or "every address (an empty interface)"
    raise ConfigError(f"{refuse} binds {shown}; {why} (interface=127.0.0.1 or ::1)")
