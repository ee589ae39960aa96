"""``/api/v1/schedules``: messages sent on a schedule by beat (create, list, show, pause,
resume, fire now, delete). Nested in the API blueprint; every route needs ``manage:schedules``, and
creating one also needs ``submit`` for its message type (a schedule sends as its creator)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, url_for
from pydantic import ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.bodies import json_body
from integration.gateway.reads import status_url
from integration.gateway.resources import managed
from integration.gateway.runtime import runtime
from integration.messages.ownership import candidates
from integration.messages.problems import (
    Conflict,
    Forbidden,
    NotFound,
    Problem,
    invalid,
    validation_errors,
)
from integration.schedules.firing import fire, sender_of
from integration.schedules.spec import ENTRY_PATTERN, ScheduleSpec
from integration.security.rights import CreatorRights

NOT_FOUND = "No schedule with this name."


def create_schedules_api(spec: SpecTree) -> Blueprint:
    schedules = managed(Blueprint("schedules", __name__, url_prefix="/schedules"),
                        "schedules", "schedule store")

    @schedules.post("")
    @spec.validate(json=ScheduleSpec, skip_validation=True, tags=["schedules"],
                   resp=Responses(HTTP_201=schemas.Schedule, HTTP_403=schemas.ProblemDocument,
                                  HTTP_409=schemas.ProblemDocument,
                                  HTTP_422=schemas.ProblemDocument))
    def create_schedule() -> tuple[Response, int, dict[str, str]]:
        """Send a message every interval or on a crontab (UTC); it is validated now as the
        submit path would, and each firing is an ordinary message (channel ``beat``)."""
        try:
            request = ScheduleSpec.model_validate(json_body())
        except ValidationError as exc:
            raise invalid(validation_errors(exc), "Invalid schedule.") from None
        principal = current_principal()
        created = runtime().schedules.create(request, owner=principal.subject, origin="api",
                                             may_submit=principal.grants.may_submit,
                                             roles=principal.roles)
        location = url_for("api.schedules.get_schedule", name=request.name)
        return jsonify(created), 201, {"Location": location}

    @schedules.get("")
    @spec.validate(skip_validation=True, tags=["schedules"],
                   resp=Responses(HTTP_200=schemas.ScheduleList,
                                  HTTP_403=schemas.ProblemDocument))
    def list_schedules() -> Response:
        """The schedules the caller may manage (from the file and made at run time)."""
        principal = current_principal()
        return jsonify(items=[s for s in runtime().schedules.all()
                              if principal.may_manage_item("schedules", str(s["owner"]))])

    @schedules.get("/<name>")
    @spec.validate(skip_validation=True, tags=["schedules"],
                   resp=Responses(HTTP_200=schemas.Schedule, HTTP_404=schemas.ProblemDocument))
    def get_schedule(name: str) -> Response:
        """One schedule with its last and next firing, by the name its creator gave (or the
        ``id`` a listing shows)."""
        return jsonify(_found(runtime().schedules.get(_mine(name))))

    @schedules.post("/<name>/pause")
    @spec.validate(skip_validation=True, tags=["schedules"],
                   resp=Responses(HTTP_200=schemas.Schedule, HTTP_404=schemas.ProblemDocument))
    def pause_schedule(name: str) -> Response:
        """Stop firing (within one beat loop) until resumed."""
        return jsonify(_found(runtime().schedules.set_enabled(_mine(name), False)))

    @schedules.post("/<name>/resume")
    @spec.validate(skip_validation=True, tags=["schedules"],
                   resp=Responses(HTTP_200=schemas.Schedule, HTTP_404=schemas.ProblemDocument))
    def resume_schedule(name: str) -> Response:
        """Fire again, from one period after now (firings missed while paused are not
        caught up)."""
        return jsonify(_found(runtime().schedules.set_enabled(_mine(name), True)))

    @schedules.post("/<name>/fire")
    @spec.validate(skip_validation=True, tags=["schedules"],
                   resp=Responses(HTTP_202=schemas.FiredSchedule,
                                  HTTP_403=schemas.ProblemDocument,
                                  HTTP_404=schemas.ProblemDocument,
                                  HTTP_503=schemas.ProblemDocument))
    def fire_schedule(name: str) -> tuple[Response, int]:
        """Send the schedule's message now, as beat would (as its creator, if its creator's
        rights still allow it), paused or not; the next firing keeps its time."""
        rt = runtime()
        entry = _mine(name)
        stored = rt.schedules.stored(entry)
        if stored is None:
            raise NotFound(NOT_FOUND)
        sender = sender_of(stored, CreatorRights(rt.policy, rt.revocations))
        if isinstance(sender, str):
            raise Forbidden(f"submit:{stored.type}", f"The schedule may not fire: {sender}.")
        result = fire(stored, datetime.now(UTC), rt.submitter.submit_raw, sender)
        if isinstance(result, Problem):
            raise result
        return jsonify(schedule=entry, id=result.id, status="queued",
                       status_url=status_url(result.id)), 202

    @schedules.delete("/<name>")
    @spec.validate(skip_validation=True, tags=["schedules"],
                   resp=Responses(HTTP_204=None, HTTP_404=schemas.ProblemDocument))
    def delete_schedule(name: str) -> tuple[str, int]:
        """Remove a schedule (a file's schedule returns when beat next starts, unless it is
        removed from the file too)."""
        if not runtime().schedules.delete(_mine(name)):
            raise NotFound(NOT_FOUND)
        return "", 204

    return schedules


def _mine(name: str) -> str:
    """The entry ``name`` names for the caller, if the caller may manage it: its own
    schedule of that name, the entry of that id, or (for a caller who manages everyone's)
    the one schedule of that name. Another owner's looks exactly like a missing one."""
    principal = current_principal()
    if re.match(ENTRY_PATTERN, name):
        store = runtime().schedules
        for entry in candidates(principal.subject, name):
            stored = store.stored(entry) if re.match(ENTRY_PATTERN, entry) else None
            if stored is not None and principal.may_manage_item("schedules", stored.owner):
                return entry
        if principal.grants.manage_scope("schedules") == "any":
            found = store.find(name)
            if len(found) > 1:
                raise Conflict(f"{len(found)} schedules are named {name!r}; use the id of "
                               f"one: {', '.join(found)}")
            if found:
                return found[0]
    raise NotFound(NOT_FOUND)


def _found(schedule: dict[str, object] | None) -> dict[str, object]:
    if schedule is None:
        raise NotFound(NOT_FOUND)
    return schedule
