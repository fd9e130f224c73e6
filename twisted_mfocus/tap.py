"""``twistd mfocus``: command-line options and service wiring (no logic)."""

from twisted.application import service, strports
from twisted.python import components, usage

from .config import Config, ConfigError
from .logs import install_observer, twistd_logs_to_stdout
from .web.api import read_token
from .web.listen import api_endpoint

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run an mfocus SIP conference focus. With no options: a primary "
                "focus on udp and tcp 127.0.0.1:5060 from the built-in config.")

    optParameters = [
        ["role", None, None, "primary, secondary or agent (default: primary)"],
        ["config", "c", None, "INI configuration file (see etc/mfocus.conf)"],
        ["domain", None, None, "domain of the conference URIs"],
        ["capacity", None, None, "members this focus will hold (default 200)"],
        ["rtp-ports", None, None, "RTP port range LOW-HIGH (default 20000-29999)"],
        ["http", None, None, ("management API endpoint, e.g. tcp:8080 (loopback only "
                              "unless [http] token_file)")],
        ["log-format", None, None, "text or json (default text)"],
        ["log-file", None, None, ("log to this file, rotated at [focus] log_rotate_bytes, "
                                  "log_files_kept old ones kept (default: stdout)")],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["peers"] = []
        self["users"] = []

    def opt_user(self, name):
        """A user an agent serves (repeatable; adds to agent.users)."""
        self["users"].append(name)

    def opt_listen(self, spec):
        """Listen on udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT (repeatable)."""
        self["listen"].append(spec)

    def opt_peer(self, uri):
        """A trusted focus URI, e.g. sip:127.0.0.1:5070 (repeatable; adds to
        multifocus.peers)."""
        self["peers"].append(uri)

    def postOptions(self):
        overrides = {
            ("focus", "role"): self["role"],
            ("focus", "domain"): self["domain"],
            ("focus", "listen"): " ".join(self["listen"]) or None,
            ("focus", "capacity"): self["capacity"],
            ("focus", "http"): self["http"],
            ("focus", "log_format"): self["log-format"],
            ("focus", "log_file"): self["log-file"],
            ("media", "rtp_ports"): self["rtp-ports"],
        }
        try:
            if self["peers"]:       # --peer adds to the file's peers
                listed = Config(self["config"]).peers if self["config"] else []
                overrides[("multifocus", "peers")] = " ".join(
                    [str(u) for u in listed] + self["peers"])
            if self["users"]:       # --user adds to the file's users
                listed = Config(self["config"]).agent_users if self["config"] else []
                overrides[("agent", "users")] = " ".join(listed + self["users"])
            cfg = self["effective"] = Config(self["config"], overrides)
            # The API: its token, and where it may listen with or without one.
            self["http_token"] = read_token(cfg.http_token_file) if cfg.http_token_file else None
            self["http_endpoint"] = api_endpoint(cfg.http, self["http_token"]) if cfg.http else None
        except (ConfigError, OSError) as e:
            raise usage.UsageError(str(e))


class FocusService(service.MultiService):
    """The top service; sets the log format and file on the application it joins."""

    def __init__(self, config, stdout_is_twistds=False, reactor=None):
        super().__init__()
        self.config = config
        self.stdout_is_twistds = stdout_is_twistds      # twistd would log text to stdout
        self.reactor = reactor                          # text lines: once per turn

    def setServiceParent(self, parent):
        if isinstance(parent, components.Componentized):    # twistd's application
            cfg = self.config
            install_observer(parent, cfg.log_format, log_file=cfg.log_file,
                             rotate_bytes=cfg.log_rotate_bytes, kept=cfg.log_files_kept,
                             stdout_is_twistds=self.stdout_is_twistds, reactor=self.reactor)
        super().setServiceParent(parent)


def makeService(options):
    from twisted.internet import reactor

    from .focus.focus import ConferenceFocus
    from .media.rtp import RTPPortPool
    from .metrics import Metrics, MetricsService, on_reactor
    from .sdnotify import Readiness
    from .stack import SIPService
    from .web.api import api_site

    cfg = options["effective"]
    top = FocusService(cfg, twistd_logs_to_stdout(options.parent), reactor)
    low, high = cfg.rtp_ports
    pool = RTPPortPool(reactor, low, high, interface=cfg.media_address)
    focus = ConferenceFocus(cfg, pool)
    metrics = Metrics(read=on_reactor(reactor)) if cfg.http else None   # GET /metrics
    sip = SIPService(reactor, cfg, tu=focus, metrics=metrics)
    sip.setServiceParent(top)
    if cfg.http:
        # After the stack: its start attaches the focus, whose pieces the
        # metrics are then handed to.
        MetricsService(metrics, focus).setServiceParent(top)
        # Leaving is stopping: stopService runs Focus.shutdown, which hands
        # the members over first (failover.py).
        leave = lambda: reactor.callLater(0, reactor.stop)  # noqa: E731
        site = api_site(focus.views, leave, token=options["http_token"], names=cfg.http_names,
                        metrics=metrics.resource())
        strports.service(options["http_endpoint"], site).setServiceParent(top)
    # Last: started once the rest listen, stopped first (systemd's Type=notify).
    Readiness(sip).setServiceParent(top)
    return top
