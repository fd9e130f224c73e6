"""Run a test inside a private network namespace with only ``lo`` up.

Tests that send messages naming foreign hosts (torture messages' Via
hosts, DNS names) use ``@private_netns``: outside a namespace, the test
re-runs itself under ``unshare -n`` and passes or fails with the inner run,
so nothing it does can leave the machine.
"""

import functools
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSIDE = "MFOCUS_IN_NETNS"


def netns_available():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return r.returncode == 0


def private_netns(test):
    """Decorator: run ``test`` in a fresh network namespace."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get(INSIDE) == "1":
            return test(*args, **kwargs)
        if not netns_available():
            pytest.fail("needs 'unshare -n' (root, util-linux, iproute2): "
                        "refusing to run where traffic could leave the machine")
        nodeid = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        env = dict(os.environ, **{INSIDE: "1"})
        env.pop("PYTEST_CURRENT_TEST", None)
        cmd = ["unshare", "-n", "--", "sh", "-c",
               'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider "$@"',
               sys.executable, nodeid]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)
        sys.stdout.write(r.stdout[-20000:])
        sys.stderr.write(r.stderr[-5000:])
        assert r.returncode == 0, f"inside the private namespace the test failed:\n{r.stdout[-8000:]}"

    return wrapper
