"""The self-healing rules file (thresholds, diagnoses, playbooks) and the two stateless stages."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from integration.loop.templates import (
    PLACEHOLDER,
    check_placeholders,
    format_number,
    placeholder_values,
    render,
)
from integration.messages.retry import PermanentError
from integration.mistakes import file_problem
from integration.settings import ConfigurationError

Op = Literal[">", ">=", "<", "<="]
Severity = Literal["info", "warning", "critical"]
Executor = Literal["noop", "log", "http"]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
#: Threshold rule names are alert names; ``:`` is kept for inline thresholds
#: (``<metric>:<level>``) so the two never share a state key.
RuleName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^:]+$")]
Text = Annotated[str, StringConstraints(max_length=4096)]
Matchers = dict[Name, Annotated[str, StringConstraints(max_length=1024)]]

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}

_ANNOTATION_NAMES = ("value", "metric", "threshold", "clear")
_DIAGNOSIS_NAMES = ("alert",)
_PLAYBOOK_NAMES = ("alert",)


class PlanError(PermanentError):
    """A diagnosis names a playbook that cannot be turned into an action (unknown playbook, or
    a label its target needs is missing); retrying cannot help."""


class TargetNotAllowed(PlanError):
    """A playbook's target, filled from an alert's labels, is not one the rules file allows
    for that playbook (``allowed_targets``): whoever sends alerts does not choose what runs."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThresholdRule(_Section):
    """Raise alert ``name`` when ``metric`` (with labels ``match``) satisfies ``op value`` for
    ``for_seconds``; resolve it when the value no longer satisfies ``op clear``."""

    name: RuleName
    metric: Name
    match: Matchers = Field(default_factory=dict)
    op: Op
    value: float = Field(allow_inf_nan=False)
    clear: float | None = Field(None, allow_inf_nan=False)
    for_seconds: float = Field(0, ge=0, allow_inf_nan=False)
    severity: Severity = "warning"
    labels: Matchers = Field(default_factory=dict)
    annotations: dict[Name, Text] = Field(default_factory=dict)

    @field_validator("annotations")
    @classmethod
    def _annotation_placeholders(cls, annotations: dict[str, str]) -> dict[str, str]:
        for text in annotations.values():
            check_placeholders(text, _ANNOTATION_NAMES, ("labels",))
        return annotations

    @field_validator("clear")
    @classmethod
    def _clear_on_safe_side(cls, clear: float | None, info: ValidationInfo) -> float | None:
        # Hysteresis only works if resolving needs a value at least as healthy as the trigger;
        # a clear level on the wrong side would resolve while the condition still holds.
        # (op and value come first, so they are validated by now, unless they were invalid.)
        op, value = info.data.get("op"), info.data.get("value")
        if clear is not None and op is not None and value is not None:
            rising = op in (">", ">=")
            if (rising and clear > value) or (not rising and clear < value):
                side = "at or below" if rising else "at or above"
                raise ValueError(f"clear {format_number(clear)} must be {side} value "
                                 f"{format_number(value)} for op {op!r}")
        return clear

    @property
    def clear_level(self) -> float:
        return self.value if self.clear is None else self.clear

    def applies_to(self, metric: str, labels: Mapping[str, str]) -> bool:
        return metric == self.metric and all(labels.get(k) == v for k, v in self.match.items())

    def breached(self, value: float) -> bool:
        """The trigger condition: ``value op value``."""
        return COMPARE[self.op](value, self.value)

    def cleared(self, value: float) -> bool:
        """The resolve condition: the value no longer satisfies ``op clear``."""
        return not COMPARE[self.op](value, self.clear_level)


class DiagnosisMatch(_Section):
    alert: Name = "*"
    labels: Matchers = Field(default_factory=dict)
    #: Only firing alerts are diagnosed; a resolved one closes the loop.
    status: Literal["firing"] = "firing"


class DiagnosisRule(_Section):
    """The diagnosis to give an alert that matches (the first matching rule wins)."""

    name: Name | None = None
    match: DiagnosisMatch = Field(default_factory=DiagnosisMatch)
    probable_cause: Text
    confidence: float = Field(ge=0.0, le=1.0)
    findings: list[Text] = Field(default_factory=list, max_length=100)
    recommended_action: Name | None = None

    @field_validator("probable_cause")
    @classmethod
    def _cause_placeholders(cls, text: str) -> str:
        return check_placeholders(text, _DIAGNOSIS_NAMES, ("labels", "annotations"))

    @field_validator("findings")
    @classmethod
    def _finding_placeholders(cls, findings: list[str]) -> list[str]:
        for text in findings:
            check_placeholders(text, _DIAGNOSIS_NAMES, ("labels", "annotations"))
        return findings

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return fnmatchcase(name, self.match.alert) and all(
            labels.get(k) == v for k, v in self.match.labels.items())


class Playbook(_Section):
    """An action to run for a diagnosis that recommends this playbook by name.

    A ``target`` with placeholders is filled from the alert's labels, which whoever sends
    the alert writes; ``allowed_targets`` (names or shell patterns) bounds what it may become,
    and is required when the executor is ``http``, which calls the declared target of that
    name.
    """

    action: Name
    target: Name
    executor: Executor = "noop"
    allowed_targets: list[Name] | None = Field(None, min_length=1, max_length=1000)
    parameters: dict[Name, Any] = Field(default_factory=dict, max_length=64)
    dry_run: bool = False

    @field_validator("target")
    @classmethod
    def _target_placeholders(cls, text: str) -> str:
        return check_placeholders(text, _PLAYBOOK_NAMES, ("labels",))

    @model_validator(mode="after")
    def _bounded_targets(self) -> Playbook:
        templated = bool(PLACEHOLDER.search(self.target))
        if templated and self.executor == "http" and self.allowed_targets is None:
            raise ValueError("an http playbook whose target comes from labels needs "
                             "allowed_targets: the declared targets that labels may choose")
        if not templated and self.allowed_targets is not None and \
                not self.allows(self.target):
            raise ValueError(f"target {self.target!r} is not among allowed_targets")
        return self

    def allows(self, target: str) -> bool:
        """Whether ``target`` is one this playbook may run (any, without ``allowed_targets``)."""
        return self.allowed_targets is None or any(
            fnmatchcase(target, pattern) for pattern in self.allowed_targets)

    @field_validator("parameters")
    @classmethod
    def _parameter_placeholders(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        for value in parameters.values():
            if isinstance(value, str):
                check_placeholders(value, _PLAYBOOK_NAMES, ("labels",))
        return parameters


class RulesFile(BaseModel):
    """The file as written. ``targets`` belongs to the egress module and is not read here."""

    model_config = ConfigDict(extra="forbid")

    thresholds: list[ThresholdRule] = Field(default_factory=list)
    diagnoses: list[DiagnosisRule] = Field(default_factory=list)
    playbooks: dict[Name, Playbook] = Field(default_factory=dict)
    targets: Any = None


@dataclass(frozen=True)
class Rules:
    """The validated rules: threshold rules for ``ThresholdEvaluator``, and the diagnosis and
    playbook stages as methods."""

    thresholds: tuple[ThresholdRule, ...] = ()
    diagnoses: tuple[DiagnosisRule, ...] = ()
    playbooks: Mapping[str, Playbook] = field(default_factory=dict)

    def diagnose(self, alert: Mapping[str, Any]) -> dict[str, Any] | None:
        """The data of a ``diagnosis`` message for this alert, or None when no rule matches.

        ``alert`` is an ``alert`` payload (or ``handle_alert``'s result: its ``alert`` key is
        read when ``name`` is absent). A resolved alert is never diagnosed: its resolution
        closes the loop, and acting on it would remediate something that has recovered.
        """
        if alert.get("status", "firing") != "firing":
            return None
        name = str(alert.get("name") or alert.get("alert") or "")
        labels = alert.get("labels") or {}
        for rule in self.diagnoses:
            if rule.matches(name, labels):
                values = placeholder_values(alert=name, labels=labels,
                                            annotations=alert.get("annotations") or {})
                return {
                    "alert": name,
                    "probable_cause": render(rule.probable_cause, values),
                    "confidence": rule.confidence,
                    "findings": [render(f, values) for f in rule.findings],
                    "recommended_action": rule.recommended_action,
                }
        return None

    def plan(self, diagnosis: Mapping[str, Any],
             alert_labels: Mapping[str, str]) -> dict[str, Any] | None:
        """The data of an ``action`` message for this diagnosis, or None when it recommends
        nothing or is not confident enough (``confidence`` below ``min_confidence``, 0.5 by
        default, as ``handle_diagnosis`` decides).

        ``alert_labels`` are the labels of the diagnosed alert, which fill the playbook's
        ``{labels.<x>}`` placeholders. Raises ``PlanError`` when the recommended playbook is
        not in the file or a label its target needs is missing: a permanent error, as a
        retry would find the same file and the same labels.
        """
        name = diagnosis.get("recommended_action")
        if not name:
            return None
        confidence = diagnosis.get("confidence")
        if isinstance(confidence, int | float) and \
                confidence < diagnosis.get("min_confidence", 0.5):
            return None
        playbook = self.playbooks.get(name)
        if playbook is None:
            known = ", ".join(sorted(self.playbooks)) or "none"
            raise PlanError(f"diagnosis of {diagnosis.get('alert')!r} recommends playbook "
                            f"{name!r}, which the rules file does not define (known: {known})")
        values = placeholder_values(alert=diagnosis.get("alert"), labels=alert_labels)
        try:
            target = render(playbook.target, values, strict=True)
            parameters = {k: render(v, values, strict=True) if isinstance(v, str) else v
                          for k, v in playbook.parameters.items()}
        except KeyError as missing:
            raise PlanError(f"playbook {name!r} needs {{{missing.args[0]}}}, which the alert "
                            f"of {diagnosis.get('alert')!r} does not have "
                            f"(labels: {', '.join(sorted(alert_labels)) or 'none'})") from None
        if not target.strip():
            raise PlanError(f"playbook {name!r} gives an empty target for "
                            f"{diagnosis.get('alert')!r}")
        if not playbook.allows(target):
            raise TargetNotAllowed(
                f"playbook {name!r} refused target {target[:200]!r} (from the labels of "
                f"{diagnosis.get('alert')!r}): not among its allowed_targets "
                f"({', '.join(playbook.allowed_targets or [])})")
        return {
            "action": playbook.action,
            "target": target,
            "executor": playbook.executor,
            "parameters": parameters,
            "dry_run": playbook.dry_run,
        }


def load_rules(path: str | None) -> Rules:
    """Read and validate a rules file (the shipped example when ``path`` is None).

    The file (``INTEGRATION_RULES_FILE``) is read once at start; a broken one stops start-up
    with a ``ConfigurationError`` naming the file, the rule and the field. The threshold
    state machine, which needs shared state, is ``integration.thresholds``.
    """
    shown = path or "(default)"
    try:
        text = Path(path).read_text() if path else \
            files("integration.loop").joinpath("default_rules.yaml").read_text()
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(
            f"INTEGRATION_RULES_FILE {shown} cannot be read: {file_problem(exc)}") from None
    return parse_rules(data, shown)


def parse_rules(data: Any, source: str) -> Rules:
    """Validate rules already parsed from YAML; errors name ``source``, the rule and field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"INTEGRATION_RULES_FILE {source}: expected a mapping with "
                                 "thresholds, diagnoses and playbooks")
    try:
        parsed = RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, data) for error in exc.errors())
        raise ConfigurationError(
            f"INTEGRATION_RULES_FILE {source} is not valid: {problems}") from None
    mismatches = _cross_check(parsed)
    if mismatches:
        raise ConfigurationError(
            f"INTEGRATION_RULES_FILE {source} is not valid: {'; '.join(mismatches)}")
    return Rules(thresholds=tuple(parsed.thresholds), diagnoses=tuple(parsed.diagnoses),
                 playbooks=dict(parsed.playbooks))


def _rule_label(section: str, index: Any, rule: Any) -> str:
    """How an error names a rule: ``thresholds rule 'HighCPU' (#1)``, ``playbook 'restart'``."""
    if section == "playbooks":
        return f"playbook {index!r}"
    name = rule.get("name") if isinstance(rule, dict) else getattr(rule, "name", None)
    number = f"#{index + 1}" if isinstance(index, int) else str(index)
    return f"{section} rule {name!r} ({number})" if name else f"{section} rule {number}"


def _describe(error: Any, data: dict[str, Any]) -> str:
    loc = list(error["loc"])
    message = error["msg"]
    if len(loc) >= 2 and loc[0] in ("thresholds", "diagnoses", "playbooks"):
        section, index, fields = loc[0], loc[1], loc[2:]
        container = data.get(section)
        try:
            rule = container[index] if container is not None else None
        except (KeyError, IndexError, TypeError):
            rule = None
        field = ".".join(str(part) for part in fields) or "(the rule itself)"
        return f"{_rule_label(section, index, rule)}, field {field}: {message}"
    where = ".".join(str(part) for part in loc) or "(top level)"
    return f"{where}: {message}"


def _cross_check(parsed: RulesFile) -> list[str]:
    """What one rule cannot know alone: unique alert names, playbooks that exist."""
    problems = []
    seen: set[str] = set()
    for index, rule in enumerate(parsed.thresholds):
        if rule.name in seen:
            problems.append(f"{_rule_label('thresholds', index, rule)}, field name: another "
                            "threshold rule has this name (each name keeps its own state)")
        seen.add(rule.name)
    for index, diagnosis in enumerate(parsed.diagnoses):
        action = diagnosis.recommended_action
        if action is not None and action not in parsed.playbooks:
            known = ", ".join(sorted(parsed.playbooks)) or "none"
            problems.append(f"{_rule_label('diagnoses', index, diagnosis)}, field "
                            f"recommended_action: no playbook {action!r} (playbooks: {known})")
    return problems
