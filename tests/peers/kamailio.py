"""Kamailio as a registrar and stateful proxy on loopback, config written here."""

import os
import signal
import socket
import subprocess
import time

from ..harness import udp_options
from .process import ChildProcess, HOST, _require_free


_KAMAILIO_CFG = """\
#!KAMAILIO
# Written by tests/peers.py: registrar + stateful proxy on udp:{host}:{port}.
# No DB, no auth, no DNS.  Users "conf*" that are not registered go to the focus
# at {host}:{focus_port}.
debug=2
log_stderror=yes
fork=yes
children={children}
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=off
dns_srv_lb=no
dns_try_naptr=no
disable_tcp=yes
enable_tls=no
listen=udp:{host}:{port}
alias="{host}:{port}"
alias="localhost:{port}"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

request_route {{
	xlog("L_INFO", "KAM: $rm $ru from $si:$sp ($ci)\\n");
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (!sanity_check("17895", "7")) {{
		exit;
	}}
	if (has_totag()) {{
		if (loose_route()) {{
			route(RELAY);
		}}
		if (is_method("ACK") && t_check_trans()) {{
			route(RELAY);
		}}
		if (uri != myself) {{
			route(RELAY);
		}}
		if (lookup("location")) {{
			route(RELAY);
		}}
		sl_send_reply("404", "Not here");
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			route(RELAY);
		}}
		exit;
	}}
	t_check_trans();
	if (is_method("REGISTER")) {{
		if (!save("location")) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (is_method("INVITE|SUBSCRIBE|REFER")) {{
		record_route();
	}}
	if (uri == myself) {{
		if (!lookup("location")) {{
			if ($rU =~ "^conf") {{
				$du = "sip:{host}:{focus_port}";
				route(RELAY);
			}}
			sl_send_reply("404", "Not Found");
			exit;
		}}
	}}
	route(RELAY);
}}

route[RELAY] {{
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}
"""


class Kamailio(ChildProcess):
    """Kamailio as registrar + stateful proxy on ``udp:127.0.0.1:port``.

    Registered users are looked up in usrloc; unregistered users whose name
    starts with ``conf`` go to the focus on ``127.0.0.1:focus_port``;
    INVITE, SUBSCRIBE and REFER are record-routed; in-dialog requests follow
    their Route (loose_route) or go to their R-URI.  ``cfg`` replaces the
    whole configuration (the benchmarks use a bare proxy); ``cpus`` pins the
    process tree with taskset (e.g. ``"1"``); ``shm_mb`` is its shared memory.
    """

    def __init__(self, workdir, port, focus_port, children=2, cfg=None, cpus=None,
                 shm_mb=32, start_timeout=10.0):
        self.dir = os.path.abspath(str(workdir))
        self.port, self.focus_port = port, focus_port
        self.cpus = cpus
        self.shm_mb = shm_mb
        self.start_timeout = start_timeout
        os.makedirs(self.dir, exist_ok=True)
        self.cfg_path = os.path.join(self.dir, "kamailio.cfg")
        self.pid_path = os.path.join(self.dir, "kamailio.pid")
        self.log_path = os.path.join(self.dir, "kamailio.log")
        if cfg is None:
            cfg = _KAMAILIO_CFG.format(host=HOST, port=port, focus_port=focus_port,
                                       children=children)
        with open(self.cfg_path, "w") as f:
            f.write(cfg)
        self.proc = None
        self._log = None

    def check(self):
        """``kamailio -c``: (ok, output)."""
        p = subprocess.run(["kamailio", "-c", "-f", self.cfg_path], cwd=self.dir,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
        return p.returncode == 0, p.stdout.decode("utf-8", "replace")

    def start(self):
        _require_free("kamailio", self.port, (socket.SOCK_DGRAM,))
        ok, out = self.check()
        if not ok:
            raise RuntimeError(f"kamailio config {self.cfg_path} rejected:\n{out}")
        args = ["kamailio", "-f", self.cfg_path, "-DD", "-E", "-m", str(self.shm_mb), "-M", "8",
                "-P", self.pid_path, "-Y", self.dir, "-w", self.dir]
        if self.cpus is not None:
            args = ["taskset", "-c", str(self.cpus)] + args
        self._log = open(self.log_path, "wb")
        # its own session, so that a SIGKILL fallback can reach the worker children too
        self.proc = subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            deadline = time.monotonic() + self.start_timeout
            while udp_options(self.port, timeout=0.2) is None:   # any answer (404) means ready
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"kamailio did not start:\n{self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """SIGTERM to the main process (with -DD it stops its children), by PID."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # stragglers of our own process group
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

