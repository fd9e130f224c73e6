"""The users and passwords of the tests, as an ``[auth]`` config would hold them."""

from twisted_mfocus.sip.auth import ha1

REALM = "mfocus"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2", "carol": "carol-secret-3"}


def users_file(tmp_path, users=PASSWORDS):
    """An htdigest users file (MD5 and SHA-256 HA1) for ``users``."""
    path = tmp_path / "users"
    path.write_text("".join(
        f"{u}:{REALM}:{ha1(u, REALM, p, 'MD5')}:{ha1(u, REALM, p, 'SHA-256')}\n"
        for u, p in users.items()))
    return path


def auth_config(tmp_path, algorithms="MD5", extra=""):
    """An ``[auth]`` section (then ``extra``).  baresip 1.x gives up on a
    challenge list that holds any algorithm but MD5 ("Function not
    implemented"), so the tests' default offers MD5 alone."""
    return (f"[auth]\nrealm = {REALM}\nusers_file = {users_file(tmp_path)}\n"
            f"algorithms = {algorithms}\n" + extra)
