"""``/console``: the operator console, server-rendered pages (Jinja) whose one script calls the
public API with the tab's bearer token, so a role sees and does here exactly what the API lets
it. The pages carry no data of their own and no token ever reaches the server in a cookie or a
URL; a strict content security policy (no inline script or style) covers every page."""

from __future__ import annotations

import re
from importlib.resources import files

from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    render_template,
    request,
    send_from_directory,
)

from integration.gateway.runtime import runtime
from integration.messages.problems import BadRequest, NotFound, invalid

#: What a console page may load and reach: its own script and styles, and the API; nothing
#: inline. ``{socket}`` is the WebSocket origin of the page's own host (browsers that predate
#: CSP 3 do not count ``ws:`` as ``'self'``).
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
          "connect-src 'self' {socket}; form-action 'self'; base-uri 'none'; "
          "frame-ancestors 'none'")
#: The console's pages: path under /console, template, title in the navigation.
PAGES = (
    ("", "stream.html", "Live"),
    ("dead-letters", "deadletters.html", "Dead letters"),
    ("held", "held.html", "Held actions"),
    ("breakers", "breakers.html", "Breakers"),
    ("schedules", "schedules.html", "Schedules"),
    ("subscriptions", "subscriptions.html", "Subscriptions"),
    ("queues", "queues.html", "Queues and workers"),
)
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_ASSETS = frozenset({"console.js", "console.css"})
_STATIC = str(files("integration.gateway") / "static")

console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")


def policy() -> str:
    """The console's Content-Security-Policy for this request."""
    scheme = "wss" if request.is_secure else "ws"
    host = request.host if _HOST.match(request.host) else ""  # never a directive of its own
    return POLICY.format(socket=f"{scheme}://{host}" if host else "")


def _page(template: str, current: str, **context: str) -> Response:
    return Response(render_template(f"console/{template}", pages=PAGES, current=current,
                                    **context), mimetype="text/html")


def _add_page(path: str, template: str, title: str) -> None:
    console.add_url_rule(f"/{path}" if path else "", f"page_{template.split('.')[0]}",
                         lambda: _page(template, path, title=title))


for _path, _template, _title in PAGES:
    _add_page(_path, _template, _title)


@console.get("/messages/<message_id>")
def message_page(message_id: str) -> Response:
    """A message's timeline and its loop; the id is only carried to the script (escaped)."""
    return _page("message.html", "messages", title="Message", message_id=message_id)


@console.get("/assets/<name>")
def asset(name: str) -> Response:
    """The console's script and styles; anything else is a 404."""
    if name not in _ASSETS:
        abort(404)
    return send_from_directory(_STATIC, name, max_age=300)


@console.post("/sign-in")
def sign_in() -> Response:
    """A single-use sign-in link's code for its token (``{"code": …}``): the code works
    once; a used, expired or unknown one is a 404. The console keeps the token in the tab."""
    body = request.get_json(silent=True)
    if body is None and request.get_data():
        raise BadRequest("The body is not JSON.")
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code:
        raise invalid([{"loc": ["code"], "msg": "a sign-in code is required", "type": "missing"}],
                      'The body must be {"code": "<the code of the sign-in link>"}.')
    token = runtime().sign_in_links.redeem(code)
    if token is None:
        raise NotFound("This sign-in link was used already or has expired: sign in with a "
                       "token, or ask for a new link.")
    response = jsonify(token=token)
    response.headers["Cache-Control"] = "no-store"
    return response
