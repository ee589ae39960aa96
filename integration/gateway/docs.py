"""The API's docs page: Swagger UI served from its PyPI package (flask-swagger-ui's files, not
its page, whose inline script a strict content security policy would block), so it works
offline and runs only the gateway's own scripts."""

from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, Response, abort, redirect, send_from_directory

#: The page spectree serves at ``/docs/swagger/`` (``{spec_url}`` is filled in by spectree).
SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>Integration bus API</title>
    <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
  </head>
  <body>
    <div id="swagger-ui" data-spec-url="/openapi.json"></div>
    <script src="/docs/assets/swagger-ui-bundle.js"></script>
    <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
    <script src="/docs/assets/docs.js"></script>
  </body>
</html>
"""
#: What the page may load: the gateway's own scripts; Swagger UI sets inline styles.
POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
          "frame-ancestors 'none'")
_VENDOR = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                     "favicon-32x32.png"})
_OWN = str(files("integration.gateway") / "static")
_SWAGGER_UI = str(files("flask_swagger_ui") / "dist")

docs = Blueprint("docs_ui", __name__)


@docs.get("/docs")
def docs_page() -> Response:
    return redirect("/docs/swagger/")  # type: ignore[return-value]


@docs.get("/docs/assets/<name>")
def asset(name: str) -> Response:
    """Swagger UI's files and the script that starts it; anything else is a 404."""
    if name in _VENDOR:
        return send_from_directory(_SWAGGER_UI, name, max_age=86400)
    if name == "docs.js":
        return send_from_directory(_OWN, name, max_age=3600)
    abort(404)
