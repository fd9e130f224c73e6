"""The daemon as a process: a listener it cannot open ends it with status 1
and one line that says which and why."""

import socket

from .harness import Focus, free_port


def test_busy_port_exits_1_naming_the_listener(tmp_path):
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", port))
        focus = Focus(["--listen", f"udp:127.0.0.1:{port}"], tmp_path)
        code = focus.proc.wait(timeout=30)
        focus.stop()
    assert code == 1
    assert f"cannot listen on udp:127.0.0.1:{port}" in focus.log()
    assert "Address already in use" in focus.log()
