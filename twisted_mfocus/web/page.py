"""The live page (issue 20 item 2): ``GET /`` on the ``--http`` listener.

Three static files shipped in the package (``static/``: index.html,
page.js, page.css; setup.cfg package_data), no build step, nothing from
elsewhere (no CDN, no fonts): the page polls the JSON API every second
and draws each conference's foci, their links and their members.

They are read once, when the site is built, and served as they are, behind
the same guard as the API (guard.py: Host, Origin).  **The token rule**:
the files are served without the token (PUBLIC, guard.py): a browser
cannot add ``Authorization`` to a navigation, and the files hold no data
(no conference, no member, no token); every API call of the page carries
``Authorization: Bearer`` (the token the user types once, kept in
sessionStorage), and a 401 shows as a form asking for it.  Every file is
sent with a strict Content-Security-Policy (``default-src 'self'``, no
inline script or style, no framing) besides the guard's nosniff.
"""

import os

from twisted.web import resource

__all__ = ["PUBLIC", "page_children"]

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: name in the URL -> (file in static/, Content-Type)
FILES = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"page.js": ("page.js", b"text/javascript; charset=utf-8"),
    b"page.css": ("page.css", b"text/css; charset=utf-8"),
}
#: the request paths (postpath) the guard serves without the token
PUBLIC = tuple([name] for name in FILES)
CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       b"frame-ancestors 'none'")


class StaticFile(resource.Resource):
    """One of the page's files: its bytes, read once; GET and HEAD only."""

    isLeaf = True

    def __init__(self, data, content_type):
        super().__init__()
        self.data, self.content_type = data, content_type

    def render(self, request):
        request.setHeader(b"content-security-policy", CSP)
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"x-frame-options", b"DENY")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"method not allowed\n"
        if request.postpath and request.postpath != [b""]:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"content-length", str(len(self.data)).encode())
        return b"" if request.method == b"HEAD" else self.data


def page_children(directory=STATIC):
    """{path step: resource} of the page's files, for the site root."""
    out = {}
    for name, (filename, content_type) in FILES.items():
        with open(os.path.join(directory, filename), "rb") as f:
            out[name] = StaticFile(f.read(), content_type)
    return out
