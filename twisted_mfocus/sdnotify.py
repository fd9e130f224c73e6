"""systemd's readiness notification (sd_notify(3)) without libsystemd.

Under ``Type=notify`` (etc/mfocus.service) systemd starts what is ordered
after mfocus only once mfocus says ``READY=1``; ``Type=simple`` would
call it started before it parsed its configuration, and a unit failing
to listen on its SIP port would look started.  The protocol is one
datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET``: a path, or, starting with ``@``, a name in the
abstract namespace (the ``@`` is a NUL byte there).  systemd takes the
sender from the socket's credentials: the message must come from the
main process (``NotifyAccess=main``), which it does (``twistd -n``).

``Readiness`` says ``READY=1`` (and a ``STATUS=``) once every SIP
listener is open (``SIPService.ready``), nothing if one could not be (the
process exits with status 1 then), and, once ready, ``STOPPING=1`` when the
service stops (the members of multi-focus conferences are handed over first,
which takes up to ``leave_timeout``).  Without ``$NOTIFY_SOCKET`` (not
under systemd, or ``Type=simple``) it does nothing.
"""

import os
import socket

from twisted.application import service
from twisted.logger import Logger

__all__ = ["Readiness", "notify"]

log = Logger()


def notify_address(value):
    """The ``AF_UNIX`` address a ``$NOTIFY_SOCKET`` value names, or None
    for an empty value or a kind we do not speak (e.g. systemd 254's
    ``vsock:``)."""
    if value.startswith("@"):
        return "\0" + value[1:]             # the abstract namespace (unix(7))
    if value.startswith("/"):
        return value
    return None


def notify(state, environ=os.environ):
    """Send ``state`` (``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``: True if
    it was sent, False without the variable; an address we cannot reach is
    logged (a unit whose readiness never comes is failed by systemd at
    ``TimeoutStartSec``: the log says why)."""
    value = environ.get("NOTIFY_SOCKET", "")
    if not value:
        return False
    address = notify_address(value)
    if address is None:
        log.warn("NOTIFY_SOCKET={value!r}: not a unix socket path or @name: "
                 "systemd is not told {state!r}", value=value, state=state)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode("utf-8"), address)
    except OSError as e:
        log.warn("NOTIFY_SOCKET={value!r}: cannot tell systemd {state!r}: {why}",
                 value=value, state=state, why=e.strerror or str(e))
        return False
    return True


class Readiness(service.Service):
    """Tells systemd when ``sip`` (stack.SIPService) is listening, and
    when the process begins to stop.  Added after it: started after it
    (its ``ready`` exists then), stopped before it."""

    def __init__(self, sip, environ=os.environ):
        self.sip = sip
        self.environ = environ
        self.said_ready = False

    def startService(self):
        super().startService()
        self.sip.ready.addCallback(self._ready)

    def _ready(self, addresses):
        """``addresses``: the Peers listened on; None when a listener failed."""
        if addresses:
            listening = " ".join(str(a) for a in addresses)
            self.said_ready = notify(f"READY=1\nSTATUS=listening on {listening}",
                                     self.environ)
        return addresses

    def stopService(self):
        """A focus that was never ready is not stopping: it failed to start."""
        if self.said_ready:
            notify("STOPPING=1", self.environ)
        return super().stopService()
