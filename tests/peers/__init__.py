"""Real SIP peers for integration tests: baresip, linphonec and a Kamailio proxy.

Each controller writes its own loopback-only configuration into a work
directory, starts one child process and stops it by its PID, always (also
when starting fails).  Nothing here resolves names or binds anything but
127.0.0.1.  Every wait takes a timeout.

    a = Baresip(tmp / "a", "alice", sip_port, rtp_low, ctrl_port).start()
    a.dial("sip:bob@127.0.0.1:5064"); a.wait_event("CALL_ESTABLISHED", 5)
    a.stop()
"""

from .baresip import Baresip, dial_all, tone_phone
from .kamailio import Kamailio
from .linphonec import Linphonec
from .process import HOST, free_port, free_sip_port, port_free, wait_port_free, write_tone_wav

__all__ = ["Baresip", "dial_all", "tone_phone", "Linphonec", "Kamailio", "HOST", "free_port", "free_sip_port", "port_free",
           "wait_port_free", "write_tone_wav"]
