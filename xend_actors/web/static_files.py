"""``/xend/static/<name>``: the pages' stylesheet, scripts and icon, shipped in the package.

Only the files present in ``web/static`` when xend starts are served, by exact name,
so no path from a request ever reaches the file system. ``/favicon.ico``, which a
browser asks of every site unbidden (the pages name theirs, but a reply viewed bare
does not), gets the same icon.
"""

from __future__ import annotations

import mimetypes
from importlib import resources

from werkzeug import Request, Response

from xend_actors.errors import NotFound
from xend_actors.web.resource import Resource

_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
ICON = "favicon.svg"


class StaticResource(Resource):
    """Serves the package's static files; the same bytes for browsers and programs."""

    public = True  # the login page needs its stylesheet before anybody is known

    def __init__(self) -> None:
        folder = resources.files("xend_actors.web") / "static"
        self._files = {item.name: item.read_bytes() for item in folder.iterdir()
                       if item.is_file() and not item.name.startswith(".")}

    def get(self, request: Request, name: str) -> Response:
        data = self._files.get(name)
        if data is None:
            raise NotFound(f"no static file {name}")
        suffix = name[name.rfind("."):] if "." in name else ""
        mimetype = _TYPES.get(suffix) or mimetypes.guess_type(name)[0]
        return Response(data, 200, {"Cache-Control": "max-age=300",
                                    "X-Content-Type-Options": "nosniff"},
                        mimetype=mimetype or "application/octet-stream")


class FaviconResource(Resource):
    """``/favicon.ico``: the pages' icon, public like the files it is one of."""

    public = True  # asked with no cookie: the session's is for /xend/ only

    def __init__(self, static: StaticResource) -> None:
        self._static = static

    def get(self, request: Request, **url_args: str) -> Response:
        return self._static.get(request, ICON)
