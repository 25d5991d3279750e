"""Money: the value model, expected revenue per customer (exact), and its parameter draws.

Value model (per persona p; the model JSON's ``value`` section, written by calibration/value.py).
Every interaction of the log may realise money (its ``value``); the model keeps three means:
  * ``conversion[p]``: the mean value of the interaction that converts (moves the customer from a
    stage before the conversion stage to it or beyond: exactly one per converted customer);
  * ``entry[p][u]``: the mean value of any other interaction that moves the customer into stage u;
  * ``interaction[p][s]``: the mean value of an interaction in the non-final stage s that does not
    move the customer on (stays or ends the journey there): repeat purchases in retention.
Interactions after the final stage is reached are not in the journey model, so their value is not
projected (the section's ``log`` says how much there was). Each mean keeps its count ``n`` and
standard deviation; a persona without any such interaction takes the all-persona mean (``pooled``).

Expected revenue per customer (exact, from sim.exact's flows, no sampling):
    conversion[p] * P(convert) + sum_{s,u not converting} flow[s -> u] * entry[u]
    + sum_s (expected interactions in s - expected moves out of s) * interaction[s]
It is the whole journey's: a horizon does not cut it. Parameter draws (sim.uncertainty) draw each
mean from a gamma with the mean's sampling variance sd^2 / n (Var = mean^2 / n where sd is unknown),
after every other parameter, from the same stream. A scenario's ``[value] per_conversion`` sets
``conversion`` (then it is the user's number: not drawn).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.exact import Exact, evaluate
from sim.model import Model

SECTION = "value"
KINDS = ("conversion", "entry", "interaction")


@dataclass
class Values:
    """The value model's means as arrays (zeros where nothing is known)."""

    conversion: np.ndarray  # [P]
    entry: np.ndarray  # [P, S] a non-converting move into stage u
    interaction: np.ndarray  # [P, S] an interaction in s that does not move the customer on
    currency: str | None = None


def has_values(model: Model) -> bool:
    """True when the model (or a scenario applied to it) says what customers are worth."""
    section = model.extras.get(SECTION) or {}
    return bool(section.get("personas"))


def currency(model: Model) -> str | None:
    """The currency the model's values are in, if it says."""
    return (model.extras.get(SECTION) or {}).get("currency")


def values_of(model: Model) -> Values:
    """The value model's means; personas or stages the section does not name are worth 0."""
    P, S = model.n_personas, model.n_stages
    out = Values(np.zeros(P), np.zeros((P, S)), np.zeros((P, S)), currency(model))
    recs = (model.extras.get(SECTION) or {}).get("personas") or {}
    for p, name in enumerate(model.personas):
        rec = recs.get(name) or {}
        out.conversion[p] = float((rec.get("conversion") or {}).get("mean", 0.0))
        for kind in ("entry", "interaction"):
            for stage, cell in (rec.get(kind) or {}).items():
                if stage in model.stages:
                    getattr(out, kind)[p, model.stages.index(stage)] = float(cell.get("mean", 0.0))
    return out


def revenue_by_persona(model: Model, exact: Exact | None = None) -> np.ndarray:
    """Expected revenue per customer of each persona [P] (whole journey, exact)."""
    ex = exact if exact is not None else evaluate(model)
    v = values_of(model)
    S, c = model.n_stages, model.conversion_index
    moves = ex.flow[:, :, 1:]  # [P, S, S] P(leaving s by moving to u)
    converting = np.zeros((S, S), dtype=bool)
    converting[:c, c:] = True
    conv = (moves * converting).sum(axis=(1, 2))
    entry = np.einsum("psu,pu->p", moves * ~converting, v.entry)
    staying = ex.interactions.sum(-1) - moves.sum(-1)  # interactions that did not move the customer on
    inter = (np.maximum(staying, 0.0) * v.interaction).sum(-1)
    return v.conversion * conv + entry + inter


def revenue_per_customer(model: Model, exact: Exact | None = None) -> float:
    """Expected revenue per arriving customer (exact), personas weighted by their shares."""
    return float(model.persona_share @ revenue_by_persona(model, exact))


def set_conversion_value(model: Model, per_conversion: dict[str, float]) -> None:
    """A scenario's ``[value]``: the value of a conversion per persona (in place, on a copy)."""
    section = model.extras.setdefault(SECTION, {})
    recs = section.setdefault("personas", {})
    for name, amount in per_conversion.items():
        rec = recs.setdefault(name, {})
        rec["conversion"] = {"mean": float(amount), "set_by": "scenario"}


def draw_sections(section: dict[str, Any], rng: np.random.Generator, draws: int) -> list[dict[str, Any]]:
    """``draws`` copies of a value section, each mean drawn from its gamma (see the module text)."""
    recs = section.get("personas") or {}
    cells = []  # (persona, kind, stage or None, mean, shape)
    for name, rec in recs.items():
        for kind in KINDS:
            group = rec.get(kind) or {}
            items = [(None, group)] if kind == "conversion" else list(group.items())
            for stage, cell in items:
                mean, n = float(cell.get("mean", 0.0)), cell.get("n")
                if not n or mean <= 0 or cell.get("set_by"):
                    continue  # nothing behind it (pooled, or the user's number): kept as it is
                sd = cell.get("sd")
                var = (float(sd) ** 2 if sd and n >= 2 else mean ** 2) / float(n)
                cells.append((name, kind, stage, mean, mean ** 2 / max(var, 1e-300)))
    shapes = np.array([c[4] for c in cells], dtype=float)
    ratio = rng.standard_gamma(shapes, size=(draws, shapes.size)) / shapes if cells else np.ones((draws, 0))
    out = []
    for d in range(draws):
        drawn = {**section, "personas": {n: {k: (dict(v) if k == "conversion" else {s: dict(c) for s, c in v.items()})
                                             if isinstance(v, dict) else v for k, v in r.items()}
                                         for n, r in recs.items()}}
        for i, (name, kind, stage, mean, _) in enumerate(cells):
            cell = drawn["personas"][name][kind] if stage is None else drawn["personas"][name][kind][stage]
            cell["mean"] = mean * float(ratio[d, i])
        out.append(drawn)
    return out


def money_label(amount: float, cur: str | None) -> str:
    """12345.6 -> '12.3 k EUR' (terminal and report)."""
    a = abs(amount)
    text = (f"{amount / 1e6:.3g} M" if a >= 1e6 else f"{amount / 1e3:.3g} k" if a >= 1e3 else f"{amount:.3g}")
    return f"{text} {cur}" if cur else text


# ---- records --------------------------------------------------------------------------------
def _r(x: float) -> float:
    return float(f"{float(x):.10g}")


REVENUE_NOTE = ("expected revenue counts the whole journey (values per sim/money.py's value model); horizon_days "
                "does not cut it")


def add_money(summary: dict[str, Any], model: Model, exact: Exact, customers: int) -> None:
    """summary.json's revenue keys, where the model has values (no keys otherwise)."""
    if not has_values(model):
        return
    per = revenue_by_persona(model, exact)
    total = float(model.persona_share @ per)
    summary["currency"] = currency(model)
    summary["expected_revenue_per_customer"] = _r(total)
    summary["expected_revenue"] = _r(total * customers)
    for p, name in enumerate(model.personas):
        summary["personas"][name]["expected_revenue_per_customer"] = _r(per[p])
    if summary.get("horizon_days") is not None:
        summary["revenue_note"] = REVENUE_NOTE


def add_revenue_uplift(record: dict[str, Any], model: Model, exact: Exact, base: Model, base_exact: Exact,
                       customers: int) -> None:
    """A comparison scenario's revenue uplift (scenario minus base), where both have values."""
    if not (has_values(model) and has_values(base)):
        return
    per, base_per = revenue_by_persona(model, exact), revenue_by_persona(base, base_exact)
    diff = float(model.persona_share @ per - base.persona_share @ base_per)
    record["expected_revenue_per_customer"] = _r(model.persona_share @ per)
    record["expected_revenue_uplift_per_customer"] = _r(diff)
    record["expected_revenue_uplift"] = _r(diff * customers)
    for p, name in enumerate(model.personas):
        if name in record.get("personas", {}) and name in base.personas:
            record["personas"][name]["expected_revenue_uplift_per_customer"] = _r(
                per[p] - base_per[base.personas.index(name)])


def add_revenue_uplift_intervals(record: dict[str, Any], drawn: Any, base_drawn: Any, customers: int) -> None:
    """The data interval of a scenario's revenue uplift, on the draws its conversion uplift uses."""
    from sim.uncertainty import Interval

    if "expected_revenue_uplift_per_customer" not in record or drawn.revenue is None or base_drawn.revenue is None:
        return
    diff = Interval(drawn.revenue - base_drawn.revenue)
    record["expected_revenue_uplift_per_customer_interval"] = [_r(x) for x in diff.bounds]
    record["expected_revenue_uplift_interval"] = [_r(x * customers) for x in diff.bounds]
    record["revenue_probability_positive"] = _r(diff.probability_positive)


def per_100k(uplift_per_customer: float, cur: str | None) -> str:
    """'+42 k EUR revenue per 100 k customers' (terminal and report headlines)."""
    amount = uplift_per_customer * 100_000
    sign = "+" if amount >= 0 else "-"
    return f"{sign}{money_label(abs(amount), cur)} revenue per 100 k customers"


# ---- a scenario's [value] table --------------------------------------------------------------
def _money(amount: Any, where: str) -> float:
    """A value in the model's currency: a finite number >= 0 (not true, not "120")."""
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{where} must be a finite number >= 0 (got {amount!r})")
    return float(amount)


def value_table(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A scenario's [value]: per_conversion, and [value.PERSONA] tables with per_conversion (personas checked
    by apply_value); ValueError says what is wrong."""
    if value is None:
        return None
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            unknown = [k for k in item if k != "per_conversion"]
            if unknown or "per_conversion" not in item:
                raise ValueError(f"[value.{key}] takes per_conversion only" +
                                 (f" (unknown key {unknown[0]!r})" if unknown else ""))
            out[key] = {"per_conversion": _money(item["per_conversion"], f"value.{key}.per_conversion")}
        elif key == "per_conversion":
            out[key] = _money(item, "value.per_conversion")
        else:
            raise ValueError(f"unknown key {key!r} in [value]: it takes per_conversion and [value.PERSONA] tables")
    return out


def apply_value(model: Model, value: dict[str, Any], file: object) -> None:
    """A scenario's [value] applied to ``model`` in place: the value of a conversion, for every persona or one
    (a persona's table wins)."""
    amounts = {name: value["per_conversion"] for name in model.personas} if "per_conversion" in value else {}
    for key, item in value.items():
        if isinstance(item, dict):
            model.persona_index(key, file=file, where=f"value.{key}")
            amounts[key] = item["per_conversion"]
    set_conversion_value(model, amounts)
