"""`journey hotspots`: the risk-of-leaving points of a journey, ranked, with exact numbers.

For every stage x touchpoint cell (personas weighted by the model's mix):
  * ``lost_per_1000``: expected journeys that end there (an interaction with the touchpoint in that
    stage ends the journey) per 1000 arriving customers, over the whole journey;
  * ``gain_if_drop_cut_10pct``: the exact conversion gained by cutting the cell's drop-off 10 %
    (every persona), as a `drop_off = 0.9` change would;
  * ``after_conversion``: the stage is at or past the conversion stage (no conversion at stake);
  * ``uplift_if_removed``: the exact conversion change if the touchpoint disappeared from that stage
    (its share going to the others, as `remove = true`); negative = conversion lost. ``None`` where
    it is the only touchpoint some persona meets there.
Cells ranked by journeys lost; ``rank_by_gain`` ranks the same cells by the 10 % gain.

Where the model has values (sim/money.py), each cell also gets, from the exact expected revenue:
  * ``revenue_lost_per_1000``: the revenue per 1000 customers that journeys ending there cost, that is
    the revenue gained if the cell's drop-off were 0 (the customer stays and interacts again instead,
    and may still leave later);
  * ``revenue_gain_if_drop_cut_10pct``: the revenue per customer gained by cutting the drop-off 10 %.
``by="revenue"`` ranks the cells by revenue lost instead of journeys lost.

Attribution (per touchpoint, every stage and persona together): ``removal_effect`` is first-order
Markov attribution's (the share of conversions lost if every journey that meets the touchpoint
ended there, as ``lose_journeys = true``), ``attributed_share`` the removal effects normalised to
sum to 1. Compare ``uplift_if_removed``, where customers meet their other touchpoints instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.exact import evaluate
from sim.model import Model
from sim.scenario import can_remove, with_drop_scaled, with_journeys_lost, with_touchpoint_removed
from sim.summary import round_sig as _r

if TYPE_CHECKING:
    from sim.simulate import Streams, Target

CUT = 0.9  # "cut the drop-off 10 %"
ATTRIBUTION_NOTE = (
    "removal_effect: the share of conversions lost if every journey that meets the touchpoint (in any stage) "
    "ended there - the removal effect of first-order Markov attribution; attributed_share: removal effects "
    "normalised to sum to 1, as Markov attribution credits conversions; compare uplift_if_removed, where "
    "customers meet their other touchpoints instead")


SEQUENCE_WARNING = ("the log's consecutive touchpoints depend on each other but this model draws each one afresh, "
                    "which overstates the removal effects of repeated touchpoints; calibrate with --touch-order 1 "
                    "for first-order Markov attribution's numbers")


def _sequences_ignored(model: Model) -> bool:
    """The calibration found the next touchpoint depends on the last one, and the model ignores it."""
    return not model.sequences and any(f.get("kind") == "touch_order" for f in model.estimator.get("fallbacks", []))


def _conversion(model: Model, horizon_days: float | None) -> float:
    return evaluate(model, horizon_days=horizon_days).conversion_rate


def _cell_mask(model: Model, s: int | slice, t: int) -> np.ndarray:
    mask = np.zeros((model.n_personas, model.n_stages, model.n_touchpoints), dtype=bool)
    mask[:, s, t] = True
    return mask


def gain_if_cut(model: Model, s: int, t: int, base: float, horizon_days: float | None) -> float:
    """Exact conversion gained by cutting the drop-off of touchpoint t in stage s by 10 %."""
    cut = with_drop_scaled(model, _cell_mask(model, s, t), CUT)
    return _conversion(cut, horizon_days) - base


def revenue_gain(model: Model, s: int, t: int, factor: float, base: float) -> float:
    """Exact revenue per customer gained by scaling the drop-off of touchpoint t in stage s by ``factor``."""
    from sim.money import revenue_per_customer

    cut = with_drop_scaled(model, _cell_mask(model, s, t), factor)
    return revenue_per_customer(cut) - base


def uplift_if_removed(model: Model, s: int, t: int, base: float, horizon_days: float | None) -> float | None:
    """Exact conversion change if touchpoint t left stage s (remove = true); None where it is all there is."""
    if not can_remove(model, _cell_mask(model, s, t)):
        return None
    gone = with_touchpoint_removed(model, _cell_mask(model, s, t), where="hotspots")
    return _conversion(gone, horizon_days) - base


def removal_effect(model: Model, t: int, base: float, horizon_days: float | None) -> float | None:
    """Markov attribution's removal effect of touchpoint t: the share of conversions lost if every
    journey that meets it ended there."""
    if base <= 0:
        return None
    lost = with_journeys_lost(model, _cell_mask(model, slice(0, model.n_stages - 1), t))
    return max(1.0 - _conversion(lost, horizon_days) / base, 0.0)  # clip the round-off below 0


BY = ("journeys", "revenue")


def hotspot_cells(model: Model, horizon_days: float | None = None, by: str = "journeys") -> list[dict[str, Any]]:
    """Every stage x touchpoint cell that customers meet, ranked by journeys (or revenue) lost there."""
    from sim.money import has_values, revenue_per_customer

    S, T = model.n_stages, model.n_touchpoints
    full = evaluate(model)  # journeys lost: over the whole journey
    money = has_values(model)
    base_revenue = revenue_per_customer(model, full) if money else 0.0
    base = _conversion(model, horizon_days) if horizon_days is not None else full.conversion_rate
    mix = model.persona_share
    lost = np.einsum("p,pst->st", mix, full.drop_offs)
    inter = np.einsum("p,pst->st", mix, full.interactions)
    total_lost = float(np.einsum("p,ps->", mix, full.dropped[:, :S - 1]))
    cells = []
    for s in range(S - 1):
        for t in range(T):
            if not np.any(model.share[:, s, t] > 0):
                continue  # never met there
            gain = gain_if_cut(model, s, t, base, horizon_days)
            removed = uplift_if_removed(model, s, t, base, horizon_days)
            cells.append({
                "stage": model.stages[s],
                "touchpoint": model.touchpoints[t],
                "after_conversion": bool(s >= model.conversion_index),
                "interactions_per_1000": _r(1000 * inter[s, t]),
                "drop_off_rate": _r(lost[s, t] / inter[s, t]) if inter[s, t] > 0 else None,
                "lost_per_1000": _r(1000 * lost[s, t]),
                "share_of_losses": _r(lost[s, t] / total_lost) if total_lost > 0 else None,
                "gain_if_drop_cut_10pct": _r(gain),
                "uplift_if_removed": _r(removed),
            })
            if money:
                cells[-1]["revenue_lost_per_1000"] = _r(1000 * revenue_gain(model, s, t, 0.0, base_revenue))
                cells[-1]["revenue_gain_if_drop_cut_10pct"] = _r(revenue_gain(model, s, t, CUT, base_revenue))
    lost_key = "revenue_lost_per_1000" if by == "revenue" else "lost_per_1000"
    cells.sort(key=lambda c: (-c[lost_key], c["stage"], c["touchpoint"]))
    by_gain = sorted(range(len(cells)), key=lambda i: (-cells[i]["gain_if_drop_cut_10pct"], i))
    for rank, i in enumerate(by_gain, start=1):
        cells[i]["rank_by_gain"] = rank
    for rank, cell in enumerate(cells, start=1):
        cell["rank"] = rank
    return cells


def hotspot_table(model: Model, top: int = 10, horizon_days: float | None = None, by: str = "journeys"
                  ) -> list[dict[str, Any]]:
    """The ``top`` cells by journeys (or revenue) lost (for the report)."""
    return hotspot_cells(model, horizon_days, by)[:top]


def attribution(model: Model, horizon_days: float | None = None) -> list[dict[str, Any]]:
    """Removal effect and attributed share of every touchpoint met in some non-final stage, largest first."""
    S, T = model.n_stages, model.n_touchpoints
    base = _conversion(model, horizon_days)
    effects = {}
    for t in range(T):
        if not np.any(model.share[:, :S - 1, t] > 0):
            continue  # never met: nothing to remove
        effects[t] = removal_effect(model, t, base, horizon_days)
    total = sum(e for e in effects.values() if e is not None)
    rows = []
    for t, effect in effects.items():
        share = effect / total if effect is not None and total > 0 else None
        rows.append({
            "touchpoint": model.touchpoints[t],
            "removal_effect": _r(effect),
            "attributed_share": _r(share),
            "conversions_per_1000_attributed": _r(None if share is None else 1000 * share * base),
        })
    rows.sort(key=lambda r: (-(r["removal_effect"] or 0.0), r["touchpoint"]))
    return rows


@dataclass
class Hotspots:
    """hotspots.json: a model's risk-of-leaving points ranked, and each touchpoint's attribution."""

    name: str
    conversion_stage: str
    horizon_days: float | None
    expected_conversion_rate: float
    lost_per_1000_total: float
    lapsed_per_1000: dict[str, float]
    hotspots: list[dict[str, Any]]
    attribution: list[dict[str, Any]]
    ranked_by: str | None = None  # "revenue lost" with --by revenue
    money: bool = False  # the model has values: the record names their currency
    currency: str | None = None
    attribution_warning: str | None = None
    expected_conversion_rate_interval: list[float] | None = None  # with draws (None where a draw has none)
    data_uncertainty: dict[str, Any] | None = None  # with draws
    drawn: bool = False  # the data intervals were drawn (their conversion interval may be None)

    def to_dict(self) -> dict[str, Any]:
        """hotspots.json's object, keys in today's order."""
        return {
            "kind": "journey.hotspots",  # lets a later run recognise the file as its own output
            "name": self.name,
            "conversion_stage": self.conversion_stage,
            "horizon_days": self.horizon_days,
            "expected_conversion_rate": self.expected_conversion_rate,
            "lost_per_1000_total": self.lost_per_1000_total,
            "lapsed_per_1000": self.lapsed_per_1000,
            **({"ranked_by": self.ranked_by} if self.ranked_by is not None else {}),
            **({"currency": self.currency} if self.money else {}),
            "hotspots": self.hotspots,
            "attribution": self.attribution,
            "attribution_note": ATTRIBUTION_NOTE,
            **({"attribution_warning": self.attribution_warning} if self.attribution_warning is not None else {}),
            "note": HOTSPOTS_NOTE,
            **({"expected_conversion_rate_interval": self.expected_conversion_rate_interval} if self.drawn else {}),
            **({"data_uncertainty": self.data_uncertainty} if self.data_uncertainty is not None else {}),
        }


HOTSPOTS_NOTE = ("lost_per_1000: journeys ended by an interaction there, per 1000 customers, over the whole "
                 "journey; lapsed_per_1000: customers who left on entering a stage, before any interaction; "
                 "gains and uplifts: exact conversion-rate changes (absolute)")


def hotspots_record(model: Model, *, name: str, top: int, horizon_days: float | None = None,
                    by: str = "journeys") -> Hotspots:
    """The ranking of ``model``'s cells and its attribution, exact (no draws)."""
    from sim.money import currency, has_values

    full = evaluate(model)
    S = model.n_stages
    mix = model.persona_share
    lapse = np.einsum("p,ps->s", mix, full.dropped) - np.einsum("p,pst->s", mix, full.drop_offs)
    conv = _conversion(model, horizon_days) if horizon_days is not None else full.conversion_rate
    money = has_values(model)
    return Hotspots(
        name=name,
        conversion_stage=model.conversion_stage,
        horizon_days=horizon_days,
        expected_conversion_rate=_r(conv),
        lost_per_1000_total=_r(1000 * float(mix @ full.dropped[:, :S - 1].sum(axis=1))),
        lapsed_per_1000={model.stages[s]: _r(1000 * max(lapse[s], 0.0)) for s in range(1, S - 1)},
        ranked_by="revenue lost" if by == "revenue" else None,
        money=money,
        currency=currency(model) if money else None,
        hotspots=hotspot_table(model, top, horizon_days, by),
        attribution=attribution(model, horizon_days),
        attribution_warning=SEQUENCE_WARNING if _sequences_ignored(model) else None,
    )


def add_intervals(record: Hotspots, models: list[Model], horizon_days: float | None) -> None:
    """95 % data intervals of the listed cells' gains and of the removal effects, over parameter draws
    (the same draws for every number)."""
    from sim.uncertainty import Interval

    def bounds(values: list[float | None]) -> list[float] | None:
        if any(v is None for v in values):
            return None
        return [_r(x) for x in Interval(np.array(values, dtype=float)).bounds]

    model = models[0]
    bases = [_conversion(m, horizon_days) for m in models]
    stage, tp = model.stages.index, model.touchpoints.index
    for cell in record.hotspots:
        s, t = stage(cell["stage"]), tp(cell["touchpoint"])
        cell["gain_if_drop_cut_10pct_interval"] = bounds([gain_if_cut(m, s, t, b, horizon_days)
                                                          for m, b in zip(models, bases)])
        if cell["uplift_if_removed"] is not None:
            cell["uplift_if_removed_interval"] = bounds([uplift_if_removed(m, s, t, b, horizon_days)
                                                         for m, b in zip(models, bases)])
    for row in record.attribution:
        t = tp(row["touchpoint"])
        row["removal_effect_interval"] = bounds([removal_effect(m, t, b, horizon_days) for m, b in zip(models, bases)])
    record.expected_conversion_rate_interval = bounds(bases)
    record.drawn = True


def rank_target(target: Target, *, top: int, draws: int, streams: Streams | None, by: str = "journeys"
                ) -> Hotspots:
    """The hotspots record of a loaded target; with ``draws``, data intervals on the parameter draws of the
    run's "hotspots" stream. Options are checked first, by ``check_options`` and ``check_ranking``."""
    horizon = target.scenario.horizon_days if target.scenario is not None else None
    record = hotspots_record(target.model, name=target.name, top=top, horizon_days=horizon, by=by)
    if draws:
        from sim.summary import no_evidence_note
        from sim.uncertainty import describe, has_evidence, parameter_draws, scenario_draws

        if has_evidence(target.base_model):
            drawn = parameter_draws(target.base_model, draws, streams.stream("hotspots"))
            add_intervals(record, scenario_draws(drawn, target.scenario), horizon)
            record.data_uncertainty = {**describe(target.base_model, draws), "seed": streams.seed}
        else:
            record.data_uncertainty = no_evidence_note(draws)
    return record


def check_options(top: int, draws: int, by: str) -> None:
    """InputError unless --top, --draws and --by are usable (before any file is read)."""
    from sim.errors import InputError

    if top < 1:
        raise InputError("must be at least 1", where="--top", value=top)
    if draws < 0:
        raise InputError("must not be negative", where="--draws", value=draws)
    if by not in BY:
        raise InputError("unknown ranking", where="--by", value=by, hint="use journeys or revenue")


def check_ranking(by: str, target: Target, file: Any) -> None:
    """InputError unless the target's model can be ranked ``by`` (revenue needs values); ``file`` as given."""
    from sim.errors import InputError

    if by == "revenue":
        from sim.money import has_values

        if not has_values(target.model):
            raise InputError("the model says nothing about money: no revenue to rank by", file=file,
                             where="--by", value=by, hint="calibrate from a log with a value column, give the "
                                                          "scenario a [value] table, or drop --by revenue")
