"""The daemon as a process: a listener it cannot open ends it with status 1
and one line that says which and why."""

import socket

from .harness import Focus, free_port, udp_options, wait_for


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


def test_a_log_file_is_rotated_and_bounded(tmp_path):
    """[focus] log_file: a real focus logs there, rotating at
    log_rotate_bytes and keeping log_files_kept old files, however much it
    writes (bad datagrams from 300 loopback addresses: a line each)."""
    port = free_port()
    config = tmp_path / "mfocus.conf"
    config.write_text("[focus]\nlog_rotate_bytes = 4000\nlog_files_kept = 2\n")
    focus = Focus(["--config", str(config), "--listen", f"udp:127.0.0.1:{port}",
                   "--log-file", str(tmp_path / "focus.log")], tmp_path)
    try:
        focus.wait_ready(port)
        for i in range(300):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((f"127.0.{1 + i // 200}.{2 + i % 200}", 0))
                s.sendto(b"NONSENSE sip:x SIP/2.0\r\n\r\n", ("127.0.0.1", port))
        assert wait_for(lambda: udp_options(port) == 200, timeout=10)
        assert wait_for(lambda: len(list(tmp_path.glob("focus.log.*"))) == 2, timeout=10)
    finally:
        focus.stop()
    logs = sorted(p.name for p in tmp_path.glob("focus.log*"))
    assert logs == ["focus.log", "focus.log.1", "focus.log.2"], logs
    assert all((tmp_path / name).stat().st_size <= 4000 + 1000 for name in logs)
    assert "bad message from" in (tmp_path / "focus.log.1").read_text()
    assert "bad message from" not in focus.log()          # not on stdout
