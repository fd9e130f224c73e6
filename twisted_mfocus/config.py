"""Configuration: a built-in default, an INI file over it, flags over both.

The defaults make ``twistd -n mfocus`` a primary focus on udp and tcp
127.0.0.1:5060 with no file at all.  ``etc/mfocus.conf`` documents every
key.  ``Config`` is plain data: validation errors name the key at fault.
"""

import configparser

__all__ = ["Config", "ConfigError", "DEFAULTS"]

DEFAULTS = """
[focus]
role = primary
domain =
listen = udp:127.0.0.1:5060 tcp:127.0.0.1:5060

[tls]
certificate =
key =
ca =

[sip]
t1 = 0.5
t2 = 4.0
t4 = 5.0
max_transactions = 250000
max_connections = 1024
idle_timeout = 300
"""

ROLES = ("primary", "secondary")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


class Config:
    """Effective settings, built from defaults, a file and overrides."""

    def __init__(self, path=None, overrides=None):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(DEFAULTS)
        if path:
            with open(path) as f:
                parser.read_file(f, source=path)
        for (section, key), value in (overrides or {}).items():
            if value is not None:
                parser[section][key] = value
        self._parser = parser
        self.role = self._get("focus", "role")
        if self.role not in ROLES:
            raise ConfigError(f"focus.role must be one of {', '.join(ROLES)}, not {self.role!r}")
        self.domain = self._get("focus", "domain")
        self.listen = self._get("focus", "listen").split()
        if not self.listen:
            raise ConfigError("focus.listen names no listener")
        for spec in self.listen:
            kind = spec.split(":", 1)[0]
            if kind not in ("udp", "tcp", "tls") or spec.count(":") < 2:
                raise ConfigError(f"focus.listen: bad listener {spec!r} "
                                  "(want udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT)")
        self.tls_certificate = self._get("tls", "certificate") or None
        self.tls_key = self._get("tls", "key") or None
        self.tls_ca = self._get("tls", "ca") or None
        if any(s.startswith("tls:") for s in self.listen) and not (
                self.tls_certificate and self.tls_key):
            raise ConfigError("a tls: listener needs tls.certificate and tls.key")
        self.t1 = self._float("sip", "t1")
        self.t2 = self._float("sip", "t2")
        self.t4 = self._float("sip", "t4")
        self.max_transactions = self._int("sip", "max_transactions")
        self.max_connections = self._int("sip", "max_connections")
        self.idle_timeout = self._float("sip", "idle_timeout")

    def _get(self, section, key):
        return self._parser.get(section, key).strip()

    def _float(self, section, key):
        return self._positive(section, key, float, "a number")

    def _int(self, section, key):
        return self._positive(section, key, int, "a whole number")

    def _positive(self, section, key, kind, what):
        try:
            value = kind(self._get(section, key))
        except ValueError:
            raise ConfigError(f"{section}.{key} must be {what}")
        if value <= 0:
            raise ConfigError(f"{section}.{key} must be positive")
        return value
