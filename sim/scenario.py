"""Scenario files (CONTRACT §2) and their application to a model.

`load_scenario` validates the TOML (pydantic; unknown keys and bad values are InputErrors naming
file, key and value). `apply(model, scenario)` is pure: it returns a changed copy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from sim.errors import InputError, closest
from sim.limits import MAX_CUSTOMERS
from sim.model import Model
from sim.money import apply_value, value_table
from sim.tomlio import read_toml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Strict):
    """Which cells a change or investment touches: a touchpoint, optionally one stage / persona."""

    touchpoint: str
    stage: str | None = None
    persona: str | None = None


# a multiplier: a finite number > 0 (strict: true or "0.7" in a TOML file is a mistake, not a factor)
Factor = Annotated[float | None, Field(default=None, gt=0, allow_inf_nan=False, strict=True)]


FACTOR_KEYS = ("drop_off", "advance", "exposure", "share")
REMOVAL_KEYS = ("remove", "lose_journeys")


class Change(Target):
    """One what-if on a touchpoint (see docs/whatif.md for the question each key answers)."""

    drop_off: Factor = None
    advance: Factor = None
    exposure: Factor = None
    share: Factor = None
    remove: bool = Field(default=False, strict=True)
    lose_journeys: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _says_something(self) -> Change:
        factors = [k for k in FACTOR_KEYS if getattr(self, k) is not None]
        removals = [f"{k} = true" for k in REMOVAL_KEYS if getattr(self, k)]
        if not factors and not removals:
            raise ValueError("a change needs drop_off, advance, exposure, share, remove = true or "
                             "lose_journeys = true")
        if len(removals) > 1:
            raise ValueError("remove = true and lose_journeys = true are two different removals; choose one "
                             "(remove: customers meet their other touchpoints instead; lose_journeys: journeys "
                             "that meet it are lost there)")
        if factors and removals:
            raise ValueError(f"{removals[0]} cannot be combined with {', '.join(factors)} in one change "
                             "(a removed touchpoint has nothing left to scale)")
        if self.exposure is not None and self.share is not None:
            raise ValueError("exposure and share are two readings of 'meet it more often'; choose one "
                             "(exposure: more interactions with it, the others unchanged; share: the same "
                             "number of interactions, more of them with it)")
        return self


class Speed(_Strict):
    """Customers leaving ``stage`` by ``way_out`` (drop_off or a later stage; every way if left out)
    do so ``factor`` times as fast: their mean days in the stage divided by ``factor``."""

    stage: str
    way_out: str | None = None
    persona: str | None = None
    factor: float = Field(gt=0, allow_inf_nan=False, strict=True)


class Capacity(_Strict):
    """A touchpoint with limited staff (``[capacity.<touchpoint>]``): the SimPy engine queues it."""

    servers: int = Field(ge=1, le=1_000_000)
    service_minutes: float = Field(gt=0, allow_inf_nan=False)
    patience_minutes: float = Field(gt=0, allow_inf_nan=False)


Lever = Literal["drop_off", "advance", "exposure"]


class Investment(Target):
    """Spend on one lever of a touchpoint, with a saturating effect (`journey optimize`)."""

    name: str
    lever: Lever
    max_effect: float = Field(ge=0, allow_inf_nan=False)
    half_saturation: float = Field(gt=0, allow_inf_nan=False)
    min_spend: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_spend: float = Field(ge=0, allow_inf_nan=False)
    spend: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounds(self) -> Investment:
        if self.max_spend < self.min_spend:
            raise ValueError(f"max_spend ({self.max_spend}) is below min_spend ({self.min_spend})")
        if self.lever == "drop_off" and self.max_effect > 1:
            raise ValueError(f"a drop_off lever's max_effect must be <= 1 (got {self.max_effect})")
        if self.spend is not None and not (self.min_spend <= self.spend <= self.max_spend):
            raise ValueError(f"spend {self.spend} is outside [min_spend, max_spend] = "
                             f"[{self.min_spend}, {self.max_spend}]")
        return self

    def effect(self, spend: float) -> float:
        """Saturating response: max_effect * spend / (spend + half_saturation)."""
        return self.max_effect * spend / (spend + self.half_saturation)

    def factor(self, spend: float) -> float:
        """The lever's multiplier at ``spend``: 1 - effect for drop_off, 1 + effect otherwise."""
        e = self.effect(spend)
        return 1.0 - e if self.lever == "drop_off" else 1.0 + e


class Budget(_Strict):
    """The total the optimizer may spend over the investments."""

    total: float = Field(ge=0, allow_inf_nan=False)


Maximize = Literal["conversion", "revenue", "profit"]


class ObjectiveTable(_Strict):
    """What `journey optimize` maximises (docs/optimize.md, "Money"); the default is today's conversion."""

    maximize: Maximize = "conversion"
    target_uplift: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_goal(self) -> ObjectiveTable:
        if self.target_uplift is not None and self.maximize != "conversion":
            raise ValueError("target_uplift asks for the cheapest split reaching a conversion uplift; it cannot "
                             f"be combined with maximize = {self.maximize!r} (leave maximize out)")
        return self


class Scenario(_Strict):
    """A scenario file (CONTRACT §2): the model it changes, and how."""

    name: str | None = None
    model: str
    customers: int | None = Field(default=None, ge=1, le=MAX_CUSTOMERS)
    horizon_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    arrival_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    arrivals_per_week: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # journey forecast
    personas: dict[str, float] | None = None
    change: list[Change] = Field(default_factory=list)
    speed: list[Speed] = Field(default_factory=list)
    capacity: dict[str, Capacity] = Field(default_factory=dict)
    investment: list[Investment] = Field(default_factory=list)
    budget: Budget | None = None
    value: dict[str, Any] | None = None  # [value]: see sim.money.value_table
    objective: ObjectiveTable | None = None
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("value")
    @classmethod
    def _value(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return value_table(value)

    @field_validator("personas")
    @classmethod
    def _mix(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        for name, share in value.items():
            if not np.isfinite(share) or share < 0:
                raise ValueError(f"persona share of {name!r} must be a finite number >= 0 (got {share})")
        if sum(value.values()) <= 0:
            raise ValueError("persona shares must not all be zero")
        return value

    @model_validator(mode="after")
    def _investments(self) -> Scenario:
        names = [inv.name for inv in self.investment]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"investment names must be unique (repeated: {', '.join(sorted(dup))})")
        if self.budget is not None:
            fixed = sum(inv.spend or 0.0 for inv in self.investment)
            floor = sum(inv.min_spend for inv in self.investment if inv.spend is None)
            if fixed + floor > self.budget.total + 1e-9:
                raise ValueError(f"fixed spends plus minimum spends ({fixed + floor:g}) exceed the "
                                 f"budget ({self.budget.total:g})")
        if self.objective is not None and self.objective.maximize == "profit" and self.customers is None:
            raise ValueError("maximize = \"profit\" needs `customers` (profit = customers x revenue uplift per "
                             "customer - spend)")
        return self

    @property
    def maximize(self) -> str:
        """What `journey optimize` maximises: conversion unless ``[objective]`` says otherwise."""
        return self.objective.maximize if self.objective is not None else "conversion"

    @property
    def source(self) -> Path | None:
        """The file the scenario was read from (None when built in code)."""
        return self._source

    @property
    def model_path(self) -> Path:
        """The model file, relative paths taken from the scenario file's folder."""
        base = self._source.parent if self._source is not None else Path(".")
        path = Path(self.model)
        return path if path.is_absolute() else base / path

    @property
    def capacity_dict(self) -> dict[str, dict[str, float]]:
        """The ``[capacity]`` tables as plain dicts."""
        return {name: cap.model_dump() for name, cap in self.capacity.items()}

    @property
    def is_baseline(self) -> bool:
        """True when the scenario changes nothing in the model."""
        return (not self.change and not self.speed and self.personas is None and self.value is None
                and all(inv.spend is None for inv in self.investment))


class _CapacityTables(_Strict):
    capacity: dict[str, Capacity] = Field(default_factory=dict)


def check_capacity(model: Model, capacity: Any, *, file: object = None) -> dict[str, Capacity]:
    """``[capacity.<touchpoint>]`` tables checked by the scenario file's rule (patience required), their
    touchpoints by the model's; InputError names the bad key."""
    if not capacity:
        return {}
    tables: dict[str, Capacity] = validate(_CapacityTables, {"capacity": capacity}, file=file).capacity
    for name in tables:
        model.touchpoint_index(name, file=file, where=f"capacity.{name}")
    return tables


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML; InputError names file, key and value."""
    path = Path(path)
    data = read_toml(path)
    scenario: Scenario = validate(Scenario, data, file=path)
    scenario._source = path
    if scenario.name is None:
        scenario.name = path.stem
    if not scenario.model_path.is_file():
        raise InputError("model file not found", file=path, where="model", value=scenario.model,
                         hint="paths are relative to the scenario file; make one with `journey calibrate`")
    return scenario


# ---- application ----------------------------------------------------------------------------
def _mask(model: Model, target: Target, file: object, where: str) -> np.ndarray:
    """Boolean [P, S, T] of the cells a change touches (non-final stages only)."""
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    mask = np.zeros((P, S, T), dtype=bool)
    t = model.touchpoint_index(target.touchpoint, file=file, where=f"{where}.touchpoint")
    stages = range(S - 1)
    if target.stage is not None:
        s = model.stage_index(target.stage, file=file, where=f"{where}.stage")
        if s == S - 1:
            raise InputError("the final stage has no interactions to change", file=file, where=f"{where}.stage",
                             value=target.stage, hint="name an earlier stage or leave stage out")
        stages = [s]
    personas = range(P)
    if target.persona is not None:
        personas = [model.persona_index(target.persona, file=file, where=f"{where}.persona")]
    for p in personas:
        for s in stages:
            mask[p, s, t] = True
    return mask


# ---- edit feasibility: drop-off + advance <= 1 in every cell, the one owner of the rule -------------
def _drop_room(model: Model, cells: Any) -> Any:
    """The most drop-off the cells can take: 1 - their advance."""
    return 1.0 - model.advance[cells].sum(axis=-1)


def _advance_room(model: Model, cells: Any) -> Any:
    """The most advance (summed over later stages) the cells can take: 1 - their drop-off."""
    return 1.0 - model.drop[cells]


def _sole_touchpoint(model: Model, p: int, s: int, ts: np.ndarray) -> bool:
    """Touchpoints ``ts`` are all persona p meets in stage s: they cannot be removed there."""
    return bool(1.0 - model.share[p, s, ts].sum() <= 1e-12)


def _scale_drop(model: Model, mask: np.ndarray, factor: float) -> int:
    """Drop x factor, capped so that advancing and dropping stay <= 1 together; returns the cells capped."""
    if factor == 1.0:  # exactly the identity (no rounding from the cap below)
        return 0
    drop = model.drop[mask] * factor
    capped = 0
    if factor > 1.0:  # never cap below the old value (a calibrated cell may sit at the limit)
        room = np.maximum(_drop_room(model, mask), model.drop[mask])
        capped = int(((drop > room) & (model.drop[mask] > 0)).sum())
        drop = np.minimum(drop, room)
    model.drop[mask] = drop
    return capped


def _scale_advance(model: Model, mask: np.ndarray, factor: float) -> int:
    """Advance x factor (every later stage alike), capped at 1 - drop; returns the cells capped."""
    if factor == 1.0:
        return 0
    adv = model.advance[mask] * factor
    total = adv.sum(axis=-1)
    room = np.maximum(_advance_room(model, mask), model.advance[mask].sum(axis=-1))
    over = (total > room) & (factor > 1.0)
    adv[over] *= (room[over] / total[over])[:, None]
    model.advance[mask] = adv
    return int(over.sum())


def _met_rows(model: Model, mask: np.ndarray):
    """(persona, stage, touchpoints) of every row a change names where the touchpoint is met."""
    for p, s in zip(*np.nonzero(mask.any(axis=-1))):
        ts = np.flatnonzero(mask[p, s])
        met = model.share[p, s, ts].sum() > 0.0
        if model.follow is not None:  # with touch sequences it may be met only after another one
            met = met or model.follow[p, s][:, ts].sum() > 0.0
        if met:  # never met there: a change leaves the row exactly as it is
            yield p, s, ts


def _scale_exposure(model: Model, mask: np.ndarray, factor: float) -> int:
    """The touchpoint's own interaction rate x factor; every other touchpoint's rate stays.

    Interactions are a Poisson process per touchpoint (rate x share), so with its share w the
    touchpoint's share becomes f w / (1 - w + f w) and the stage's total rate x (1 - w + f w).
    With touch sequences its rate after every other touchpoint is multiplied too (``follow``'s
    column; rows keep the others' own rates). Never capped: returns 0.
    """
    if factor == 1.0:
        return 0
    for p, s, ts in _met_rows(model, mask):
        _own_rates(model, p, s, ts, factor)
    return 0


def _own_rates(model: Model, p: int, s: int, ts: np.ndarray, factor: float) -> None:
    """Touchpoints ``ts``'s own rates x factor in one persona x stage, every other rate kept."""
    row = model.share[p, s].copy()
    row[ts] *= factor
    total = row.sum()
    model.share[p, s] = row / total
    model.rate[p, s] *= total
    if model.follow is not None:  # own rate after l is rate x follow[l, t]: keep it for the others
        follow = model.follow[p, s]
        before = follow.sum(-1)
        follow[:, ts] *= factor
        gone = (follow.sum(-1) <= 0) & (before > 0)  # a row whose only next touchpoint went: the others
        follow[gone] = model.share[p, s] * before[gone, None] * total
        model.follow[p, s] = follow / total


def _substitute(row: np.ndarray, ts: np.ndarray, factor: float) -> tuple[np.ndarray, bool]:
    """``ts``'s part of ``row`` x factor (at most all of it), the others scaled to fill the rest."""
    mass = row.sum()
    if mass <= 0:
        return row, False
    unit = row / mass
    new_t = np.minimum(unit[ts] * factor, 1.0)
    capped = bool(new_t.sum() > 1.0 - 1e-12 or np.any(unit[ts] * factor > 1.0))
    if new_t.sum() > 1.0:
        new_t = new_t / new_t.sum()
    others = np.ones(row.size, dtype=bool)
    others[ts] = False
    rest = unit[others].sum()
    unit[ts] = new_t
    if rest > 0:
        unit[others] *= (1.0 - new_t.sum()) / rest
    else:  # it is the only touchpoint met: it keeps the whole row
        unit[ts] = new_t / new_t.sum()
    return unit * mass, capped


def _scale_share(model: Model, mask: np.ndarray, factor: float) -> int:
    """The touchpoint's share x factor (capped at 1), the others renormalised, the stage's total rate
    unchanged: the same number of interactions, more of them with this touchpoint (with touch
    sequences, in every row of ``follow`` too). Returns rows capped."""
    if factor == 1.0:
        return 0
    capped = 0
    for p, s, ts in _met_rows(model, mask):
        model.share[p, s], hit = _substitute(model.share[p, s], ts, factor)
        capped += hit
        if model.follow is not None:
            for last in range(model.n_touchpoints):
                model.follow[p, s, last] = _substitute(model.follow[p, s, last], ts, factor)[0]
    return capped


def _remove_touchpoint(model: Model, mask: np.ndarray, file: object, where: str) -> None:
    """The touchpoint is gone and customers go on meeting their other touchpoints: its rate drops to 0,
    the others keep theirs (the limit of exposure -> 0: the shares renormalise, the stage's rate falls)."""
    for p, s, ts in _met_rows(model, mask):
        if _sole_touchpoint(model, p, s, ts):
            raise InputError("cannot remove the only touchpoint met in a stage", file=file, where=where,
                             value=f"{model.touchpoints[ts[0]]} in {model.stages[s]} for {model.personas[p]}",
                             hint="remove it for other stages only, use lose_journeys = true, or change its "
                                  "drop_off instead")
        _own_rates(model, p, s, ts, 0.0)
        model.share[p, s, ts] = 0.0  # exactly: no round-off left behind


def _lose_journeys(model: Model, mask: np.ndarray) -> None:
    """Attribution's removal: every interaction with the touchpoint ends the journey there.

    Markov attribution's removal effect (journeys that would meet the channel are lost); customers
    who never meet it are untouched.
    """
    model.drop[mask] = 1.0
    model.advance[mask] = 0.0


def _scale_speed(model: Model, speed: Speed, file: object, where: str) -> None:
    """leave_speed x factor for one stage's way out (or all of them), one persona or all."""
    if model.sequences:
        raise InputError("leave speeds are not available with touch sequences", file=file, where=where,
                         hint="calibrate with --touch-order 0 for [[speed]] what-ifs")
    S = model.n_stages
    s = model.stage_index(speed.stage, file=file, where=f"{where}.stage")
    if s == S - 1:
        raise InputError("the final stage is never left", file=file, where=f"{where}.stage", value=speed.stage,
                         hint="name an earlier stage")
    outs = model.ways(s)
    names = [model.way_name(o) for o in outs]
    if speed.way_out is not None:
        if speed.way_out not in names:
            raise InputError(f"not a way out of stage {speed.stage!r}", file=file, where=f"{where}.way_out",
                             value=speed.way_out, hint=closest(speed.way_out, names))
        outs = [outs[names.index(speed.way_out)]]
    personas = (range(model.n_personas) if speed.persona is None else
                [model.persona_index(speed.persona, file=file, where=f"{where}.persona")])
    for p in personas:
        model.leave_speed[p, s, outs] *= speed.factor


# ---- pure edits for callers outside the scenario: a changed copy, the model untouched ----------
def with_drop_scaled(model: Model, mask: Any, factor: float) -> Model:
    """The model with drop-off x factor in ``mask``'s cells, capped as a `drop_off` change is."""
    out = model.copy()
    _scale_drop(out, mask, factor)
    return out


def can_remove(model: Model, mask: np.ndarray) -> bool:
    """Whether `remove = true` can take the touchpoint out of ``mask``'s cells (not the only one met)."""
    return not any(_sole_touchpoint(model, p, s, ts) for p, s, ts in _met_rows(model, mask))


def with_touchpoint_removed(model: Model, mask: np.ndarray, *, file: object = None,
                            where: str = "remove") -> Model:
    """The model with the touchpoint gone from ``mask``'s cells, as `remove = true`."""
    out = model.copy()
    _remove_touchpoint(out, mask, file, where)
    return out


def with_journeys_lost(model: Model, mask: np.ndarray) -> Model:
    """The model where every interaction in ``mask``'s cells ends the journey, as `lose_journeys = true`."""
    out = model.copy()
    _lose_journeys(out, mask)
    return out


def with_drop(model: Model, cell: tuple[int, int, int], drop: float) -> Model:
    """The model with one cell's drop-off set to ``drop``, capped at 1 - its advance."""
    out = model.copy()
    out.drop[cell] = min(drop, _drop_room(out, cell))
    return out


def with_advance(model: Model, cell: tuple[int, int, int], advance: np.ndarray) -> Model:
    """The model with one cell's advance set to ``advance``, scaled down to fit 1 - its drop-off."""
    out = model.copy()
    total = advance.sum()
    out.advance[cell] = advance * min(1.0, _advance_room(out, cell) / total) if total > 0 else advance
    return out


def _rescaled(row: np.ndarray, i: int, value: float, others: float, fallback: np.ndarray) -> np.ndarray:
    """``row`` with entry i set to ``value``, the other entries (summing to ``others``) keeping their
    proportions; ``fallback`` where there are no others."""
    if others <= 0:
        return fallback.copy()
    row = row * ((1.0 - value) / others)
    row[i] = value
    return row


def with_share(model: Model, p: int, s: int, t: int, share: float, fallback: np.ndarray) -> Model:
    """The model with touchpoint t's share of (p, s) set to ``share``, the others keeping their proportions."""
    out = model.copy()
    row = out.share[p, s]
    out.share[p, s] = _rescaled(row, t, share, row.sum() - row[t], fallback)
    return out


def with_persona_share(model: Model, p: int, share: float, fallback: np.ndarray) -> Model:
    """The model with persona p's share set to ``share``, the other personas keeping their proportions."""
    out = model.copy()
    out.persona_share = _rescaled(out.persona_share, p, share, 1.0 - out.persona_share[p], fallback)
    return out


_SCALERS = {"drop_off": _scale_drop, "advance": _scale_advance, "exposure": _scale_exposure, "share": _scale_share}
_MEANING = {
    "drop_off": ("it multiplies P(an interaction there ends the journey): 0.7 = 30 % fewer drop-offs; "
                 "drop-off + advance cannot exceed 1"),
    "advance": ("it multiplies P(an interaction there moves the customer on): 1.2 = 20 % more; "
                "advance + drop-off cannot exceed 1"),
    "share": "it multiplies the touchpoint's share of the stage's interactions: 2 = twice the share, at most all",
}


def _apply_factor(model: Model, mask: np.ndarray, lever: str, factor: float) -> int:
    """Scale one lever of the cells in ``mask``; returns how many cells the factor's cap reached."""
    try:
        scaler = _SCALERS[lever]
    except KeyError:  # validated by pydantic; a programming error otherwise
        raise ValueError(f"unknown lever {lever!r}") from None
    return scaler(model, mask, factor)


def cap_note(where: str, lever: str, factor: float, capped: int, cells: int) -> str:
    """One line saying that a factor reached its cap, and what the factor means."""
    return (f"{where}: {lever} = {factor:g} reached its cap in {capped} of {cells} cells; {_MEANING[lever]}")


def apply(model: Model, scenario: Scenario, *, file: object = None,
          spends: dict[str, float] | None = None, notes: list[str] | None = None) -> Model:
    """The model with the scenario's persona mix, changes and investment spends applied.

    ``spends`` sets (or overrides) investment spends by name, as the optimizer does; investments
    with neither a fixed spend nor an entry in ``spends`` have no effect. Lines for the user (a
    factor that reached its cap) are appended to ``notes`` when given.
    """
    file = file if file is not None else scenario.source
    out = model.copy()
    if scenario.personas is not None:
        mix = np.zeros(out.n_personas)
        for name, share in scenario.personas.items():
            mix[out.persona_index(name, file=file, where=f"personas.{name}")] = share
        out.persona_share = mix / mix.sum()
    for i, change in enumerate(scenario.change):
        _apply_change(out, change, file, f"change[{i}]", notes)
    for i, speed in enumerate(scenario.speed):
        _scale_speed(out, speed, file, f"speed[{i}]")
    check_capacity(out, scenario.capacity, file=file)
    _apply_spends(out, scenario.investment, dict(spends or {}), file)
    if scenario.value is not None:
        apply_value(out, scenario.value, file)
    out.check(file=file)
    return out


def _apply_change(out: Model, change: Change, file: object, where: str, notes: list[str] | None) -> None:
    """One ``[[change]]`` applied to ``out`` in place; a factor that reached its cap adds a note."""
    mask = _mask(out, change, file, where)
    if change.remove:
        _remove_touchpoint(out, mask, file, where)
        return
    if change.lose_journeys:
        _lose_journeys(out, mask)
        return
    for lever in FACTOR_KEYS:
        factor = getattr(change, lever)
        if factor is None:
            continue
        cells = int((mask & (out.share > 0)).sum())
        capped = _apply_factor(out, mask, lever, factor)
        if capped and notes is not None:
            notes.append(cap_note(f"{where} ({change.touchpoint})", lever, factor, capped, cells))


def _apply_spends(out: Model, investments: list[Investment], spends: dict[str, float], file: object) -> None:
    """The investments' spends (``spends`` over the fixed ones) applied to ``out`` in place."""
    known = {inv.name for inv in investments}
    for name in spends:
        if name not in known:
            raise InputError("unknown investment", file=file, where="spends", value=name)
    for i, inv in enumerate(investments):
        mask = _mask(out, inv, file, f"investment[{i}]")
        spend = spends.get(inv.name, inv.spend)
        if spend is None or spend <= 0:
            continue
        _apply_factor(out, mask, inv.lever, inv.factor(spend))
