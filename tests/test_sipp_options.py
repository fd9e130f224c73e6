"""SIPp against a real daemon: 400 OPTIONS at 200/s over UDP and over TCP.

Over UDP SIPp drops 10 % of what it sends and receives (``-lost 10``): the
request retransmissions must meet the server transaction's stored response
(RFC 3261 §17.2.2) so that every call succeeds.  Over TCP the same load
runs without ``-lost``: SIPp's loss emulation drops whole messages on a
reliable transport, where nothing retransmits them (RFC 3261 §17.1.2.2:
Timer E only runs over unreliable transports), which no real TCP peer
would ever see; and this kernel has no ``netem`` to lose real segments.
"""

import pytest

from .harness import Focus, free_port, run_sipp


@pytest.fixture
def focus(tmp_path):
    port = free_port()
    f = Focus(["--listen", f"udp:127.0.0.1:{port}", "--listen", f"tcp:127.0.0.1:{port}"],
              tmp_path)
    f.wait_ready(port)
    f.port = port
    yield f
    f.stop()


@pytest.mark.parametrize("transport,loss", [("u1", ["-lost", "10"]), ("t1", [])],
                         ids=["udp-10%-loss", "tcp"])
def test_400_options_at_200_per_second(focus, tmp_path, transport, loss):
    rc, stats = run_sipp("options_uac.xml", f"127.0.0.1:{focus.port}", tmp_path,
                         ["-t", transport, "-m", "400", "-r", "200"] + loss)
    assert stats["FailedCall(C)"] == 0, stats
    assert stats["SuccessfulCall(C)"] == 400, stats
    assert rc == 0
    if loss:
        assert stats["Retransmissions(C)"] > 0, "the loss was not exercised"
    assert focus.alive()
