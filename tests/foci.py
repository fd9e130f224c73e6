"""Several real ``twistd mfocus`` processes on loopback, for multi-focus tests
and benchmarks: start them as peers of each other and read their APIs."""

import os
import time

from .harness import Focus, api_get, free_port

#: RTP ranges below the kernel's ephemeral ports (32768+), where free_port
#: and the phones' ports come from, so a focus never takes a phone's port.
_next_rtp = [20000]


def _rtp_range(capacity):
    width = 4 * capacity + 100     # overflow, and pairs resting before reuse
    low = _next_rtp[0]
    _next_rtp[0] = low + width if low + 2 * width < 32000 else 20000
    return low, low + width - 1


class Node:
    """One focus process: its SIP port, API port and URI."""

    def __init__(self, name, role, capacity, cwd, config_text="", peers=()):
        self.name, self.role, self.capacity = name, role, capacity
        self.port, self.http = free_port(), free_port()
        self.uri = f"sip:127.0.0.1:{self.port}"
        self.cwd = os.path.join(str(cwd), name)
        os.makedirs(self.cwd, exist_ok=True)
        self.config = os.path.join(self.cwd, "mfocus.conf")
        with open(self.config, "w") as f:
            f.write("[events]\nnotify_interval = 0.05\n" + config_text)
        self.peers = list(peers)
        self.extra_listen = []          # more listeners, e.g. tls:127.0.0.1:PORT
        self.process = None

    def start(self, log_format="text"):
        low, high = self.rtp_range = _rtp_range(self.capacity)
        # UDP and TCP: large NOTIFYs between foci go over TCP (RFC 3261 §18.1.1).
        args = ["--config", self.config, "--role", self.role,
                "--listen", f"udp:127.0.0.1:{self.port}",
                "--listen", f"tcp:127.0.0.1:{self.port}", "--capacity", str(self.capacity),
                "--http", f"tcp:{self.http}:interface=127.0.0.1",
                "--rtp-ports", f"{low}-{high}", "--log-format", log_format]
        for peer in self.peers:
            args += ["--peer", peer]
        for spec in self.extra_listen:
            args += ["--listen", spec]
        self.process = Focus(args, self.cwd)
        self.process.wait_ready(self.port)
        return self

    def api(self, path):
        """The JSON body of GET ``path`` (None unless 200)."""
        status, body = api_get(self.http, path)
        return body if status == 200 else None

    def conference(self, name):
        """The API's view of conference ``name`` (None if unknown)."""
        status, body = api_get(self.http, f"/api/v1/conferences/{name}")
        return body if status == 200 else None

    def stop(self):
        if self.process is not None:
            self.process.stop()


def stop_all(nodes, *others):
    """End of a test: kill ``others`` (SIPp, phones: anything with kill())
    and every focus.  SIGKILL, not SIGTERM: a focus that is told to stop
    leaves (hands its members to the other foci, waiting up to
    leave_timeout), which only the tests of leaving want."""
    for other in others:
        other.kill()
    for node in nodes:
        if node.process is not None and node.process.proc.poll() is None:
            node.process.proc.kill()
    for node in nodes:
        node.stop()


def proof_config(cwd, proof):
    """Config text for how foci prove themselves: "address" (no secret: foci
    on loopback are trusted by address) or "secret" (a shared secret file,
    every request between foci carries its proof)."""
    if proof == "address":
        return ""
    from twisted_mfocus.sip.proof import new_secret
    path = os.path.join(str(cwd), "foci-secret")
    with open(path, "w") as f:
        f.write(new_secret() + "\n")
    return f"[multifocus]\nsecret_file = {path}\n"


def start_foci(cwd, specs, config_text="", start=True):
    """Foci from ``specs`` [(name, role, capacity)], each naming every other
    as ``--peer`` in spec order; started unless ``start`` is False (to
    change a node's peers first, then ``start_all``)."""
    nodes = [Node(name, role, cap, cwd, config_text) for name, role, cap in specs]
    for node in nodes:
        node.peers = [other.uri for other in nodes if other is not node]
    return start_all(nodes) if start else nodes


def start_all(nodes):
    for node in nodes:
        node.start()
    return nodes


def shared_view(view):
    """What every focus must agree on: members (with their focus) and foci."""
    if view is None:
        return None
    members = sorted((m["uri"], m["endpoint"], m["focus"], m["status"], m["joined"])
                     for m in view["members"])
    foci = sorted((f["uri"], f["role"], f["capacity"], f["members"]) for f in view["foci"])
    return members, foci


def agreed(nodes, name):
    """The shared view if every node's API shows the same one, else None."""
    views = [shared_view(node.conference(name)) for node in nodes]
    if views[0] is not None and all(v == views[0] for v in views):
        return views[0]
    return None


def wait_agreement(nodes, name, predicate, timeout=30.0, interval=0.05):
    """Poll until all APIs agree on a view satisfying ``predicate``.

    Returns (view, lag): lag is the time from the first poll where any
    API showed that final view until all showed it (the propagation
    delay, to the polling resolution); (None, None) on timeout."""
    deadline = time.monotonic() + timeout
    first_seen = {}
    while time.monotonic() < deadline:
        views = [shared_view(node.conference(name)) for node in nodes]
        now = time.monotonic()
        for view in views:
            if view is not None:
                key = repr(view)
                first_seen.setdefault(key, now)
        if views[0] is not None and all(v == views[0] for v in views) and predicate(views[0]):
            return views[0], now - first_seen[repr(views[0])]
        time.sleep(interval)
    return None, None
