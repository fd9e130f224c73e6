"""SIPp against a real daemon: OPTIONS under 10 % packet loss, UDP and TCP.

SIPp drops 10 % of what it sends and receives (``-lost 10``); over UDP the
request retransmissions must meet the server transaction's stored response
(RFC 3261 §17.2.2) so that every call succeeds.
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


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_400_options_at_200_per_second_with_10_percent_loss(focus, tmp_path, transport):
    rc, stats = run_sipp("options_uac.xml", f"127.0.0.1:{focus.port}", tmp_path,
                         ["-t", transport, "-m", "400", "-r", "200", "-lost", "10"])
    assert stats["FailedCall(C)"] == 0, stats
    assert stats["SuccessfulCall(C)"] == 400, stats
    assert rc == 0
    assert focus.alive()
