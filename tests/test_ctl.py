"""``mfocusctl`` (twisted_mfocus/ctl.py) run as a process against a real
``twistd mfocus`` with a token and SIPp members: every command, as text
and as ``--json``, its output and its exit status (0 done, 1 the API
refused, 2 usage, 3 unreachable or 401)."""

import json
import os
import subprocess
import sys

import pytest

from .harness import ROOT, Focus, Sipp, api_get, free_port, wait_for

TOKEN = "ctl-test-token-0123456789abcdef"
ROOM = "room"


def ctl(*args, api=None, token_file=None, env=None):
    """(exit status, stdout, stderr) of ``mfocusctl ARGS``."""
    argv = [sys.executable, "-m", "twisted_mfocus.ctl"]
    if api is not None:
        argv += ["--api", api]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.pop("MFOCUS_API", None)
    environ.pop("MFOCUS_TOKEN_FILE", None)
    environ.update(env or {})
    done = subprocess.run(argv + list(args), capture_output=True, text=True, env=environ,
                          timeout=30, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def focus(tmp_path):
    port, http = free_port(), free_port()
    low = free_port(count=20, even=True)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = tmp_path / "mfocus.conf"
    config.write_text(f"[http]\ntoken_file = {token}\n[media]\nrtp_timeout = 0\n")
    f = Focus(["--config", str(config), "--listen", f"udp:127.0.0.1:{port}",
               "--http", f"tcp:{http}:interface=127.0.0.1",
               "--rtp-ports", f"{low}-{low + 19}"], tmp_path)
    try:
        f.wait_ready(port)
    except BaseException:
        f.stop()
        raise
    f.port, f.http, f.token = port, http, token
    f.api = f"http://127.0.0.1:{http}"
    yield f
    f.stop()


def test_every_command_as_text_and_json(focus, tmp_path):
    def run(*args, json_out=False):
        extra = ("--json",) if json_out else ()
        return ctl(*extra, *args, api=focus.api, token_file=focus.token)

    assert run("list") == (0, "no conferences\n", "")
    assert run("list", json_out=True)[:2] == (0, "[]\n")
    sipp = Sipp("member.xml", f"127.0.0.1:{focus.port}", tmp_path,
                ["-s", ROOM, "-m", "3", "-l", "3", "-r", "20", "-set", "wait_bye", "1"],
                timeout=60)
    one, two, three = (f"sip:member{n}@127.0.0.1:{sipp.port}" for n in (1, 2, 3))
    try:
        assert wait_for(lambda: json.loads(run("list", json_out=True)[1]) == [
            {"name": ROOM, "uri": f"sip:{ROOM}@127.0.0.1:{focus.port}", "members": 3}],
            timeout=15)
        code, out, _ = run("list")
        assert code == 0 and out.split("\n")[0].split() == ["NAME", "MEMBERS", "URI"]
        assert out.split("\n")[1].split() == [ROOM, "3", f"sip:{ROOM}@127.0.0.1:{focus.port}"]

        code, out, _ = run("show", ROOM)
        assert code == 0 and out.startswith(f"conference {ROOM}  sip:{ROOM}@") and \
            "locked: no" in out
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
        assert rows[one][1:4] == ["connected", "sendrecv", "no"]
        assert rows[f"sip:127.0.0.1:{focus.port}"][1:4] == ["primary", "active", "3"]
        shown = json.loads(run("show", ROOM, json_out=True)[1])
        assert shown["name"] == ROOM and len(shown["members"]) == 3

        assert run("mute", ROOM, one) == (0, f"muted {one} in {ROOM}\n", "")
        assert json.loads(run("show", ROOM, json_out=True)[1])["members"][0]["muted"] is True
        code, out, _ = run("unmute", ROOM, one, json_out=True)
        assert (code, json.loads(out)) == (0, {"uri": one, "muted": False})

        assert run("mute-all", ROOM, "--except", two) == (
            0, f"muted 2 members of {ROOM} (not {two})\n", "")
        muted = {m["uri"]: m["muted"] for m in json.loads(run("show", ROOM, json_out=True)[1])
                 ["members"]}
        assert muted == {one: True, two: False, three: True}
        code, out, _ = run("unmute-all", ROOM, json_out=True)
        assert code == 0 and json.loads(out)["members"] == [one, two, three]
        assert run("unmute-all", ROOM) == (0, f"unmuted 3 members of {ROOM}\n", "")

        assert run("lock", ROOM) == (0, f"{ROOM} locked\n", "")
        assert "locked: yes" in run("show", ROOM)[1]
        code, out, _ = run("unlock", ROOM, json_out=True)
        assert (code, json.loads(out)) == (0, {"name": ROOM, "locked": False, "forwarded_to": []})

        assert run("kick", ROOM, two) == (0, f"kicked {two} from {ROOM} (1 call)\n", "")
        code, out, err = run("kick", ROOM, two)
        assert (code, out) == (1, "") and "no such member" in err
        code, out, _ = run("kick", ROOM, two, json_out=True)
        assert (code, json.loads(out)) == (1, {"error": "no such member"})
        code, _, err = run("show", "nosuch")
        assert code == 1 and "no such conference" in err

        # No [recording] directory here: the focus refuses, the command says why.
        code, out, err = run("record", ROOM, "start")
        assert (code, out) == (1, "") and "recording is off" in err, err

        code, out, _ = run("end", ROOM, json_out=True)
        assert (code, json.loads(out)) == (0, {"name": ROOM, "calls": 2, "subscriptions": 0,
                                               "forwarded_to": []})
        assert sipp.wait() == 0, sipp.errors()
        assert sipp.logs().count("BYE from the focus") == 3
        assert wait_for(lambda: run("list") == (0, "no conferences\n", ""))
        code, _, err = run("end", ROOM)
        assert code == 1 and "no such conference" in err
    finally:
        sipp.kill()
    assert run("leave") == (0, "the focus is leaving\n", "")
    focus.proc.wait(30)
    assert focus.proc.returncode == 0


def test_without_the_token_unreachable_and_usage(focus, tmp_path):
    code, out, err = ctl("list", api=focus.api)                     # no token: 401
    assert (code, out) == (3, "") and "401" in err and "--token-file" in err
    code, out, err = ctl("--json", "list", api=focus.api)
    assert (code, json.loads(out)) == (3, {"error": "unauthorized"})
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token-0123456789\n")
    assert ctl("lock", ROOM, api=focus.api, token_file=wrong)[0] == 3
    # The environment names the API and the token file.
    env = {"MFOCUS_API": focus.api, "MFOCUS_TOKEN_FILE": str(focus.token)}
    assert ctl("list", env=env) == (0, "no conferences\n", "")
    assert ctl("show", ROOM, env=env)[0] == 1                       # no such conference
    # Nothing listens: 3, and --json still prints one document.
    closed = f"http://127.0.0.1:{free_port()}"
    code, out, err = ctl("--json", "list", api=closed, token_file=focus.token)
    assert code == 3 and "cannot reach the API" in json.loads(out)["error"]
    assert ctl("end", ROOM, api=closed)[0] == 3
    # Usage: 2 (argparse), and a token file that cannot be read.
    assert ctl("kick", ROOM, api=focus.api, token_file=focus.token)[0] == 2
    assert ctl("bogus", api=focus.api)[0] == 2
    assert ctl("list", api=f"127.0.0.1:{focus.http}")[0] == 2         # no scheme
    assert ctl("list", api=focus.api, token_file=tmp_path / "missing")[0] == 2
    assert api_get(focus.http, "/api/v1/conferences", token=TOKEN) == (200, [])
    code, out, _ = ctl("--help")
    assert code == 0 and "exit status:" in out and "not supported by this focus yet" in out
