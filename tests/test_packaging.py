"""`pip install .` (not editable) must make `twistd mfocus` and the
`mfocusctl` console script available."""

import os
import subprocess
import sys

from .harness import ROOT, TWISTD


def test_plain_install_provides_the_twistd_plugin(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), ROOT],
                   check=True, cwd=tmp_path, timeout=300)
    assert (target / "twisted" / "plugins" / "mfocus_plugin.py").is_file()
    assert not (target / "twisted" / "plugins" / "__init__.py").exists()
    # The live page's files (web/page.py) come as package data.
    for name in ("index.html", "page.js", "page.css"):
        assert (target / "twisted_mfocus" / "web" / "static" / name).is_file(), name
    # Run from elsewhere with only the installed copy on the path.
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(TWISTD + ["--help"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "mfocus" in out.stdout
    help_out = subprocess.run(TWISTD + ["mfocus", "--help"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "--listen" in help_out.stdout and "--role" in help_out.stdout
    import_check = subprocess.run(
        [sys.executable, "-c", "import twisted_mfocus, sys; print(twisted_mfocus.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert import_check.stdout.startswith(str(target))
    # The operator's command line (setup.cfg console_scripts) comes with it.
    ctl = target / "bin" / "mfocusctl"
    assert ctl.is_file()
    ctl_help = subprocess.run([str(ctl), "--help"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert ctl_help.returncode == 0 and "exit status:" in ctl_help.stdout
