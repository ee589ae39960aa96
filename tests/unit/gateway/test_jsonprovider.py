"""The gateway's JSON answers: orjson where it can, Flask's provider's output otherwise."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from integration.gateway.jsonprovider import FastJSONProvider
from integration.messages.status import Status


def app(debug: bool = False) -> Flask:
    flask_app = Flask(__name__)
    flask_app.debug = debug
    flask_app.json = FastJSONProvider(flask_app)
    return flask_app


def test_compact_answers_keep_key_order_and_flasks_types() -> None:
    value = {"z": 1, "a": [Status.QUEUED, "é"], "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    with app().app_context() as context:
        text = context.app.json.response(value).get_data(as_text=True)
    assert text == ('{"z":1,"a":["queued","é"],"at":"Fri, 02 Jan 2026 03:04:05 GMT"}\n')
    flask_way = DefaultJSONProvider(Flask(__name__))
    assert json.loads(text) == json.loads(flask_way.dumps(value))


def test_what_orjson_refuses_and_debug_answers_go_through_flask() -> None:
    with app().app_context() as context:
        assert context.app.json.dumps({"n": 2**70}) == '{"n": 1180591620717411303424}'
    with app(debug=True).app_context() as context:
        assert context.app.json.response({"a": 1}).get_data(as_text=True) == '{\n  "a": 1\n}\n'
