"""``twistd mfocus``: command-line options and service wiring (no logic)."""

from twisted.application import service
from twisted.python import usage

from .config import Config, ConfigError

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run an mfocus SIP conference focus. With no options: a primary "
                "focus on udp and tcp 127.0.0.1:5060 from the built-in config.")

    optParameters = [
        ["role", None, None, "primary or secondary (default: primary)"],
        ["config", "c", None, "INI configuration file (see etc/mfocus.conf)"],
        ["domain", None, None, "domain of the conference URIs"],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, spec):
        """Listen on udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT (repeatable)."""
        self["listen"].append(spec)

    def postOptions(self):
        overrides = {
            ("focus", "role"): self["role"],
            ("focus", "domain"): self["domain"],
            ("focus", "listen"): " ".join(self["listen"]) or None,
        }
        try:
            self["effective"] = Config(self["config"], overrides)
        except (ConfigError, OSError) as e:
            raise usage.UsageError(str(e))


def makeService(options):
    from twisted.internet import reactor
    from .stack import SIPService

    top = service.MultiService()
    SIPService(reactor, options["effective"]).setServiceParent(top)
    return top
