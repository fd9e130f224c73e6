"""Configuration: a built-in default, an INI file over it, flags over both.

The defaults make ``twistd -n mfocus`` a primary focus on udp and tcp
127.0.0.1:5060 with no file at all.  ``etc/mfocus.conf`` documents every
key.  ``Config`` is plain data: validation errors name the key at fault.
"""

import configparser
import enum
from typing import NamedTuple, Optional, Tuple

__all__ = ["Config", "ConfigError", "DEFAULTS", "Role", "RoomConfig"]

DEFAULTS = """
[focus]
role = primary
domain =
listen = udp:127.0.0.1:5060 tcp:127.0.0.1:5060
capacity = 200
factory_user = conference
max_conferences = 1000
create_rooms = any
pin_timeout = 20
qualify = 0
refer_policy = members
refer_targets = domain
http =
log_format = text
log_file =
log_rotate_bytes = 10000000
log_files_kept = 5

[auth]
realm =
users_file =
algorithms = SHA-256 MD5
nonce_lifetime = 300

[http]
token_file =
names =

[multifocus]
peers =
headroom = 1
overflow = 20
max_hops = 3
link_expires = 600
handover_grace = 0.5
max_conference_members = 10000
keepalive = 1.0
keepalive_misses = 3
leave_timeout = 10.0
registrar =
secret_file =

[agent]
users =
when_hosting = redirect
escalate = anyone
redirect_expires = 60
max_bindings = 4
focus = yes
focus_capacity = 4

[media]
address =
rtp_ports = 20000-29999
codecs = opus, G722, PCMU, PCMA
speakers = 3
mix_rate = 16000
jitter_min = 20
jitter_max = 160
srtp = optional
sdes_over_cleartext = no
relatch_after = 10
rtp_timeout = 30
hold_timeout = 600

[recording]
directory =
min_free_mb = 100
max_mb = 1024

[events]
notify_interval = 0.2
min_expires = 60
max_expires = 3600
max_subscriptions = 10000

[limits]
requests_per_second = 100
request_burst = 400
calls_per_source = 50
subscriptions_per_source = 100
rooms_per_source = 20
notify_bytes_per_second = 65536
notify_burst_bytes = 1048576
sources = 10000

[nat]
flows = auto

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
connections_per_source = 64
idle_timeout = 300
message_timeout = 5
server =
session_expires = 1800
min_se = 90
"""

class Role(enum.StrEnum):
    """What ``[focus] role`` (``--role``) makes of this process."""

    PRIMARY = "primary"         # holds the conference URIs it makes
    SECONDARY = "secondary"     # holds only members handed to it
    AGENT = "agent"             # a user's agent: registrar and B2BUA (focus/agent.py)


ROLES = tuple(Role)
WHEN_HOSTING = ("redirect", "busy")
REFER_POLICIES = ("members", "anyone")
REFER_TARGETS = ("domain", "any")
CREATE_ROOMS = ("any", "configured")
ESCALATE = ("anyone", "authenticated", "nobody")
SUBSCRIBERS = ("anyone", "members")
SRTP_MODES = ("off", "optional", "mandatory")     # [media] srtp: media/srtp.py Mode
CODEC_NAMES = ("OPUS", "G722", "PCMU", "PCMA")   # [media] codecs: media/codecs.py CODECS
ROOM_KEYS = ("pin", "max_members", "locked", "members", "subject", "subscribers")


class RoomConfig(NamedTuple):
    """A ``[room:NAME]`` section: the policy of one configured room."""

    name: str
    pin: Optional[str] = None           # digits a caller enters (then #)
    max_members: Optional[int] = None
    locked: bool = False                # admits nobody new
    members: Tuple[str, ...] = ()       # user names; non-empty: authenticated users only
    subject: Optional[str] = None
    subscribers: str = "anyone"         # who may SUBSCRIBE to its conference state
LOG_FORMATS = ("text", "json")


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
        role = self._get("focus", "role")
        if role not in ROLES:
            raise ConfigError(f"focus.role must be one of {', '.join(ROLES)}, not {role!r}")
        self.role = Role(role)
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
        self.capacity = self._int("focus", "capacity")
        self.factory_user = self._get("focus", "factory_user")
        if not self.factory_user:
            raise ConfigError("focus.factory_user must not be empty")
        self.max_conferences = self._int("focus", "max_conferences")
        self.create_rooms = self._choice("focus", "create_rooms", CREATE_ROOMS)
        self.pin_timeout = self._float("focus", "pin_timeout")
        self.qualify = self._number("focus", "qualify")
        self.refer_policy = self._choice("focus", "refer_policy", REFER_POLICIES)
        self.refer_targets = self._choice("focus", "refer_targets", REFER_TARGETS)
        self.auth_realm = self._get("auth", "realm") or None
        self.auth_users_file = self._readable("auth", "users_file", _check_users)
        self.auth_nonce_lifetime = self._float("auth", "nonce_lifetime")
        self.auth_algorithms = tuple(self._get("auth", "algorithms").split())
        if not self.auth_algorithms or not set(self.auth_algorithms) <= {"SHA-256", "MD5"}:
            raise ConfigError("auth.algorithms must name SHA-256 and/or MD5, in the order "
                              "they are offered")
        self.http_token_file = self._get("http", "token_file") or None
        self.http_names = tuple(self._get("http", "names").split())
        self.rooms = self._rooms()
        self.http = self._get("focus", "http") or None
        self.log_format = self._choice("focus", "log_format", LOG_FORMATS)
        self.log_file = self._get("focus", "log_file") or None
        self.log_rotate_bytes = self._int("focus", "log_rotate_bytes")
        self.log_files_kept = self._count("focus", "log_files_kept")
        self.rtp_ports = self._range("media", "rtp_ports")
        self.media_address = self._get("media", "address") or \
            self.listen[0].split(":", 1)[1].rsplit(":", 1)[0].strip("[]")
        self.srtp = self._choice("media", "srtp", SRTP_MODES)
        self.codecs = self._codecs()
        self.speakers = self._count("media", "speakers")
        self.mix_rate = int(self._choice("media", "mix_rate", ("16000", "48000")))
        # The jitter buffer's delay bounds, whole 20 ms frames (at least one).
        self.jitter_min, self.jitter_max = (max(1, round(self._int("media", k) / 20))
                                            for k in ("jitter_min", "jitter_max"))
        if self.jitter_min > self.jitter_max:
            raise ConfigError("media.jitter_min must not exceed media.jitter_max")
        try:        # RFC 4568 §8.3: SDES keys in SDP over UDP/TCP only if asked
            self.sdes_over_cleartext = self._parser.getboolean("media", "sdes_over_cleartext")
        except ValueError:
            raise ConfigError("media.sdes_over_cleartext must be yes or no")
        self.relatch_after = self._float("media", "relatch_after")
        self.nat_flows = self._choice("nat", "flows", ("auto", "always", "never"))
        self.rtp_timeout = self._number("media", "rtp_timeout")
        self.hold_timeout = self._number("media", "hold_timeout")
        self.recording_directory = self._directory("recording", "directory")
        self.recording_min_free_mb = self._count("recording", "min_free_mb")
        # RIFF sizes are 32-bit: a WAV file stays below 4 GiB (media/recording.py).
        self.recording_max_mb = self._int("recording", "max_mb")
        if self.recording_max_mb > 4095:
            raise ConfigError("recording.max_mb must be at most 4095 (a WAV file's sizes "
                              "are 32-bit)")
        self.notify_interval = self._number("events", "notify_interval")
        self.min_expires = self._int("events", "min_expires")
        self.max_expires = self._int("events", "max_expires")
        self.max_subscriptions = self._int("events", "max_subscriptions")
        self.peers = self._uris("multifocus", "peers")
        self.headroom = self._count("multifocus", "headroom")
        self.overflow = self._count("multifocus", "overflow")
        self.max_hops = self._int("multifocus", "max_hops")
        self.link_expires = self._int("multifocus", "link_expires")
        if self.link_expires < self.min_expires:
            raise ConfigError(f"multifocus.link_expires must be at least events.min_expires "
                              f"({self.min_expires})")
        self.handover_grace = self._number("multifocus", "handover_grace")
        self.max_conference_members = self._int("multifocus", "max_conference_members")
        self.keepalive = self._float("multifocus", "keepalive")
        self.keepalive_misses = self._int("multifocus", "keepalive_misses")
        self.leave_timeout = self._number("multifocus", "leave_timeout")
        registrar = self._uris("multifocus", "registrar")
        if len(registrar) > 1:
            raise ConfigError("multifocus.registrar takes one URI")
        self.registrar = registrar[0] if registrar else None
        self.secret_file = self._readable("multifocus", "secret_file", _check_secret)
        self.agent_users = self._get("agent", "users").split()
        if self.role is Role.AGENT and not self.agent_users:
            raise ConfigError("agent.users must name the users an agent serves")
        self.agent_when_hosting = self._choice("agent", "when_hosting", WHEN_HOSTING)
        self.agent_redirect_expires = self._int("agent", "redirect_expires")
        self.agent_max_bindings = self._int("agent", "max_bindings")
        self.agent_escalate = self._choice("agent", "escalate", ESCALATE)
        # A user's agent may become a focus of a conference its user is in
        # (focus/agent.py, "Recruitment"); an agent's capacity is what its
        # machine carries for the conferences, not [focus] capacity.
        self.agent_focus = self._choice("agent", "focus", ("yes", "no")) == "yes"
        self.agent_focus_capacity = self._int("agent", "focus_capacity")
        if self.role is Role.AGENT:
            self.capacity = self.agent_focus_capacity
        if self.role is Role.AGENT and not self.auth_users_file:
            raise ConfigError("an agent needs auth.users_file: a served user registers "
                              "and calls with its password (htdigest format)")
        self.t1 = self._float("sip", "t1")
        self.t2 = self._float("sip", "t2")
        self.t4 = self._float("sip", "t4")
        self.max_transactions = self._int("sip", "max_transactions")
        self.max_connections = self._int("sip", "max_connections")
        self.connections_per_source = self._int("sip", "connections_per_source")
        self.idle_timeout = self._float("sip", "idle_timeout")
        self.message_timeout = self._float("sip", "message_timeout")
        self.server_header = self._get("sip", "server") or None
        self.session_expires = self._count("sip", "session_expires")
        self.min_se = self._int("sip", "min_se")
        if self.min_se < 90 or 0 < self.session_expires < self.min_se:
            raise ConfigError("sip.min_se must be at least 90 (RFC 4028 §4) and "
                              "sip.session_expires 0 or at least sip.min_se")
        # [limits]: per source (budget.py); 0 is no limit
        self.requests_per_second = self._number("limits", "requests_per_second")
        self.request_burst = self._count("limits", "request_burst")
        self.calls_per_source = self._count("limits", "calls_per_source")
        self.subscriptions_per_source = self._count("limits", "subscriptions_per_source")
        self.rooms_per_source = self._count("limits", "rooms_per_source")
        self.notify_bytes_per_second = self._count("limits", "notify_bytes_per_second")
        self.notify_burst_bytes = self._count("limits", "notify_burst_bytes")
        self.budget_sources = self._int("limits", "sources")

    def _readable(self, section, key, check):
        """A file named by ``section.key`` (None if empty), checked at start."""
        path = self._get(section, key) or None
        if path is not None:
            try:
                check(path)
            except (OSError, ValueError) as e:
                raise ConfigError(f"{section}.{key}: {e}")
        return path

    def _directory(self, section, key):
        """A directory the focus writes into (None if empty), checked at start."""
        import os
        path = self._get(section, key) or None
        if path is not None and not os.path.isdir(path):
            raise ConfigError(f"{section}.{key}: {path} is not a directory")
        if path is not None and not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{section}.{key}: {path} is not writable by this process")
        return os.path.abspath(path) if path is not None else None

    def _rooms(self):
        """The ``[room:NAME]`` sections, by name."""
        rooms = {}
        for section in self._parser.sections():
            if not section.startswith("room:"):
                continue
            name = section[len("room:"):].strip()
            if not name or any(c in name for c in "@:;?<> "):
                raise ConfigError(f"[{section}]: not a room name")
            unknown = set(self._parser[section]) - set(ROOM_KEYS)
            if unknown:
                raise ConfigError(f"{section}.{sorted(unknown)[0]}: unknown key "
                                  f"(rooms take {', '.join(ROOM_KEYS)})")
            get = self._parser[section].get
            pin = (get("pin") or "").strip() or None
            if pin is not None and not (pin.isdigit() and pin.isascii() and len(pin) <= 16):
                raise ConfigError(f"{section}.pin must be 1 to 16 digits")
            max_members = None
            if (get("max_members") or "").strip():
                max_members = self._positive(section, "max_members", int, "a whole number")
            try:
                locked = self._parser.getboolean(section, "locked", fallback=False)
            except ValueError:
                raise ConfigError(f"{section}.locked must be yes or no")
            members = tuple(m for m in (get("members") or "").replace(",", " ").split())
            subscribers = (get("subscribers") or "anyone").strip()
            if subscribers not in SUBSCRIBERS:
                raise ConfigError(f"{section}.subscribers must be one of "
                                  f"{', '.join(SUBSCRIBERS)}, not {subscribers!r}")
            rooms[name] = RoomConfig(name, pin, max_members, locked, members,
                                     (get("subject") or "").strip() or None, subscribers)
        return rooms

    def _choice(self, section, key, choices):
        value = self._get(section, key)
        if value not in choices:
            raise ConfigError(f"{section}.{key} must be one of {', '.join(choices)}, "
                              f"not {value!r}")
        return value

    def _codecs(self):
        """[media] codecs: names of media/codecs.py, best first, upper-cased."""
        names = [n.strip().upper() for n in self._get("media", "codecs").replace(",", " ").split()]
        unknown = [n for n in names if n not in CODEC_NAMES]
        if unknown or not names:
            raise ConfigError(f"media.codecs: {', '.join(unknown) or 'none'} is not one of "
                              f"opus, G722, PCMU, PCMA")
        return tuple(dict.fromkeys(names))

    def _number(self, section, key):
        """A number that may be zero."""
        return self._non_negative(section, key, float, "a number")

    def _count(self, section, key):
        """A whole number that may be zero."""
        return self._non_negative(section, key, int, "a whole number")

    def _non_negative(self, section, key, kind, what):
        try:
            value = kind(self._get(section, key))
        except ValueError:
            raise ConfigError(f"{section}.{key} must be {what}")
        if value < 0:
            raise ConfigError(f"{section}.{key} must not be negative")
        return value

    def _uris(self, section, key):
        """Space-separated SIP URIs (parsed, so a typo is caught at start)."""
        from .sip.errors import SIPError
        from .sip.uri import URI
        out = []
        for text in self._get(section, key).split():
            try:
                uri = URI.parse(text)
            except SIPError as e:
                raise ConfigError(f"{section}.{key}: {text!r} is not a SIP URI ({e})")
            if not uri.is_sip:
                raise ConfigError(f"{section}.{key}: {text!r} is not a sip: or sips: URI")
            out.append(uri)
        return out

    def _range(self, section, key):
        """LOW-HIGH, an even number of ports at least two wide (RTP+RTCP)."""
        low, dash, high = self._get(section, key).partition("-")
        try:
            low, high = int(low), int(high)
        except ValueError:
            raise ConfigError(f"{section}.{key} must be LOW-HIGH (e.g. 20000-29999)")
        if not dash or not 1024 <= low < high <= 65535:
            raise ConfigError(f"{section}.{key} must be LOW-HIGH with "
                              "1024 <= LOW < HIGH <= 65535")
        return low, high

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


def _check_secret(path):
    from .sip.proof import load_secret
    load_secret(path)


def _check_users(path):
    from .sip.auth import load_users
    load_users(path, "")         # every line parses (realms are told apart later)
