"""The one place that renders errors: every rejection is an RFC 9457 problem document."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from integration.messages.problems import PROBLEM_CONTENT_TYPE, TYPE_BASE, UNEXPECTED, Problem

log = logging.getLogger(__name__)


def problem_response(problem: Problem) -> Response:
    response = Response(json.dumps(problem.to_dict()), status=problem.status,
                        mimetype=PROBLEM_CONTENT_TYPE)
    response.headers.update(problem.headers)
    return response


def _http_exception(exc: HTTPException) -> Response:
    """Werkzeug's errors (404 route, 405, 413 body limit, ...) in the same shape."""
    if exc.response is not None:  # already rendered (the rate limiter's 429 problem)
        return exc.response  # type: ignore[return-value]
    status = exc.code or 500
    slug = (exc.name or "error").lower().replace(" ", "-")
    document = {"type": TYPE_BASE + slug, "title": exc.name, "status": status,
                "detail": exc.description}
    response = Response(json.dumps(document), status=status, mimetype=PROBLEM_CONTENT_TYPE)
    for name, value in exc.get_headers():  # e.g. Allow on 405, Retry-After where set
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return problem_response(Problem(UNEXPECTED))


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(Problem, problem_response)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, _unexpected)
