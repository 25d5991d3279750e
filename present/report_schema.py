"""What the report accepts of each result file: required keys and the type of every value it reads.

A tampered or foreign file is one line naming the file and key instead of a crash.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sim.errors import InputError

REQUIRED = {
    "simulate": ("customers", "conversion_stage", "conversion_rate", "conversion_rate_ci", "stages", "personas"),
    "compare": ("base", "scenarios"),
    "optimize": ("allocation", "expected_conversion_rate", "baseline_expected_conversion_rate", "expected_uplift"),
    "backtest": ("split", "predicted", "observed", "naive"),
    "forecast": ("start", "weeks", "targets"),
}
SCENARIO_KEYS = ("name", "conversion_rate", "uplift", "uplift_ci")


# The types of what the report reads (key -> kind; "?" marks a key that may be absent or null), so
# that a tampered or foreign file is one line naming the file and key instead of a crash.
_STAGE = {"reached": "count", "reached_rate": "rate"}
_PERSONA = {"customers": "count", "conversion_rate": "rate?"}
_SUMMARY = {"customers": "count", "conversion_stage": "text", "conversion_rate": "rate",
            "conversion_rate_ci": "interval", "expected_conversion_rate": "rate?",
            "conversion_rate_interval": "interval?", "expected_conversion_rate_interval": "interval?",
            "replications": "count?", "stages": ("map", _STAGE), "personas": ("map", _PERSONA)}
_SCENARIO = {"name": "text", "conversion_rate": "rate?", "uplift": "number?", "uplift_ci": "interval?",
             "expected_uplift": "number?", "uplift_interval": "interval?", "expected_uplift_interval": "interval?",
             "probability_positive": "rate?"}
SCHEMA = {
    "simulate": _SUMMARY,
    "compare": {"base": ("object", _SUMMARY), "scenarios": ("list", _SCENARIO)},
    "optimize": {"allocation": ("map", "number"), "expected_conversion_rate": "rate",
                 "baseline_expected_conversion_rate": "rate", "expected_uplift": "number", "spend": "number?",
                 "trials": "count?"},
    "backtest": {"split": "text", "predicted": ("map", "rate"), "observed": ("map", "rate"),
                 "naive": ("map", "rate"), "error": ("map", "number?"), "naive_error": ("map", "number?")},
    "forecast": {"start": "text", "weeks": "count", "rollout": "text?", "conversion_stage": "text?",
                 "targets": ("list", {"name": "text", "total": ("object", {"conversions": "number",
                                                                              "uplift": "number?",
                                                                              "uplift_interval": "interval?"}),
                                      "weeks": ("list", {"start": "text", "conversions": "number",
                                                         "arrivals": "number",
                                                         "conversions_interval": "interval?"})})},
}


def _is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _kind_error(kind: str, v: Any) -> str | None:
    """What is wrong with ``v`` as a ``kind`` (None when it is one)."""
    if kind == "text":
        return None if isinstance(v, str) else "must be text"
    if kind == "number":
        return None if _is_number(v) else "must be a finite number"
    if kind == "count":
        return None if _is_number(v) and float(v).is_integer() and v >= 0 else "must be a whole number >= 0"
    if kind == "rate":
        return None if _is_number(v) and -1e-9 <= v <= 1 + 1e-9 else "must be a number from 0 to 1"
    if kind == "interval":
        if not (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)):
            return "must be an interval [low, high] of two numbers"
        return None if v[0] <= v[1] else "interval's low end is above its high end"
    return None


def _check_spec(value: Any, spec: Any, file: Path, where: str) -> None:
    """InputError naming ``file`` and the key at ``where`` unless ``value`` matches ``spec``."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise InputError("must be a JSON object", file=file, where=where or None, value=_shown(value))
        for key, sub in spec.items():
            optional = isinstance(sub, str) and sub.endswith("?")
            at = f"{where}.{key}" if where else key
            if (optional and value.get(key) is None) or (isinstance(sub, tuple) and key not in value):
                continue  # the required sections are checked by REQUIRED, with its hint
            if key not in value:
                raise InputError("missing key", file=file, where=at, hint="rerun the command that wrote it")
            _check_spec(value[key], sub.rstrip("?") if optional else sub, file, at)
        return
    if isinstance(spec, tuple):
        container, inner = spec
        if container == "object":
            _check_spec(value, inner, file, where)
        elif container == "list":
            if not isinstance(value, list):
                raise InputError("must be a list", file=file, where=where, value=_shown(value))
            for i, item in enumerate(value):
                _check_spec(item, inner, file, f"{where}[{i}]")
        else:  # map: any keys, every value alike
            if not isinstance(value, dict):
                raise InputError("must be a JSON object", file=file, where=where, value=_shown(value))
            for key, item in value.items():
                if isinstance(inner, str) and inner.endswith("?") and item is None:
                    continue
                _check_spec(item, inner.rstrip("?") if isinstance(inner, str) else inner, file, f"{where}.{key}")
        return
    problem = _kind_error(spec, value)
    if problem:
        raise InputError(problem, file=file, where=where, value=_shown(value),
                         hint="the file was changed or is not journey's; rerun the command that wrote it")


def _shown(value: Any) -> Any:
    """A value as an error shows it: scalars as they are, containers by their type's name."""
    return value if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def check_result(kind: str, data: Any, file: Path) -> None:
    """InputError unless ``data``, read from ``file``, is a complete ``kind`` result the report can read."""
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", file=file, value=type(data).__name__)
    for key in REQUIRED[kind]:
        if key not in data:
            raise InputError("missing key", file=file, where=key,
                             hint=f"not a complete `journey {kind}` result; rerun it")
    if kind == "compare":
        if not isinstance(data["scenarios"], list):
            raise InputError("must be a list", file=file, where="scenarios")
        for i, sc in enumerate(data["scenarios"]):
            for key in SCENARIO_KEYS:
                if not isinstance(sc, dict) or key not in sc:
                    raise InputError("missing key", file=file, where=f"scenarios[{i}].{key}")
        for key in REQUIRED["simulate"][2:4]:
            if key not in data["base"]:
                raise InputError("missing key", file=file, where=f"base.{key}")
    _check_spec(data, SCHEMA[kind], file, "")
