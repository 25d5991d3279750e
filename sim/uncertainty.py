"""How sure the calibration is: draws of the model's parameters given the data it was fitted on.

A calibrated model keeps the counts behind every number. Each block of parameters gets the
posterior its estimator implies, centred on the calibrated value and as concentrated as the
evidence behind it plus the pooling prior (``prior_weight`` pseudo-observations):

  * per persona x stage x touchpoint, the outcome of an interaction (stay, drop off, move to each
    later stage), drawn level by level as the estimator pools: the stage's average from all its
    counts, the all-persona estimate of the stage and touchpoint given that draw (Dirichlet(counts
    + m * draw)), the cell given that (Dirichlet(counts + m * draw)); a quiet last interaction
    counts by the share of its outcome its quiet time tells (``counts.uncertain``: the cure model's
    missing information, by Louis' identity). The draws are centred on the calibrated values;
  * per persona x stage, the touchpoint shares, the same way: the all-persona shares, then each
    persona's (Dirichlet(interactions + m * draw));
  * the lapse after moving into a stage: Beta((entered + m) * lapse, (entered + m) * (1 - lapse));
  * the interaction rate: Gamma with shape gaps + m and the calibrated mean;
  * each way out's leave speed: Gamma with shape leave events + m and the calibrated mean (with
    phase-type stays, ``--dwell phases``, this draws the stay's mean);
  * the shapes of phase-type stays (``--dwell phases``): per stage x way out, the pooled shape
    Dirichlet(timed exits x weights, all personas), then each persona's given that draw
    (Dirichlet(exits x weights + m * draw)), centred on the calibrated weights. The model stores
    the weights unit-free (phase rate = kbar x leave rate), so the drawn speed keeps the mean and
    the weights only change the shape; drawn after every other block, so the rest stay as without;
  * the persona mix: Dirichlet(customers of each persona);
  * the value model's means (sim/money.py): gamma with the mean's sampling variance, drawn last.

Blocks are independent (the likelihood factorises over them). Not included: the cure model's
coupling of drop-offs with the interaction rate (it matters when most of the history is recent,
as in a week-long log), and whether the model's form is right (backtest and drift check that). Every projected
number is then evaluated exactly on each draw: no simulation per draw. The draws depend on the
run's seed only, and the same draws serve the base and every scenario, so an uplift's interval is
paired in parameters as common random numbers pair customers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sim.defaults import DEFAULT_DRAWS
from sim.model import Model

__all__ = ["DEFAULT_DRAWS", "parameter_draws", "Interval", "Drawn"]
LEVEL = 0.95
METHOD = ("posterior draws of the calibrated parameters given the counts behind them (Dirichlet outcomes and "
          "shares drawn level by level as the calibration pools them, beta lapses, gamma rates and leave "
          "speeds, Dirichlet persona mix), each evaluated exactly; percentile interval")
SHAPE_METHOD = ("; with phase-type stays, the phase weights too (Dirichlet, the pooled shape then each "
                "persona's, the mean kept by the leave speed)")
NOT_INCLUDED = ("the cure model's coupling of drop-offs with the interaction rate (it matters when most of "
                "the history is recent) and whether the model's form is right (see backtest and drift)")


def has_evidence(model: Model) -> bool:
    """True when the model file keeps the counts the draws need."""
    needed = ("interactions", "stayed", "dropped", "advanced", "entered", "lapsed", "gaps", "customers")
    return all(k in model.counts for k in needed)


def real_customers(model: Model) -> int | None:
    """How many customers of a real log the model was fitted on (None if unknown)."""
    n = model.log_summary.get("customers")
    return int(n) if isinstance(n, int | float) else None


def parameter_draws(model: Model, draws: int, seed: np.random.SeedSequence | np.random.Generator) -> list[Model]:
    """``draws`` models whose parameters are drawn from their posterior given ``model.counts``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    c = model.counts
    P, S = model.n_personas, model.n_stages
    m = float(model.estimator.get("pooling", {}).get("prior_weight", 10.0))
    D = int(draws)
    live = np.zeros(S, dtype=bool)
    live[:-1] = True

    # outcome of an interaction: [stay, drop, advance to u...]
    probs = np.concatenate([model.stay[..., None], model.drop[..., None], model.advance], axis=-1)
    # the counts behind them; a quiet row's outcome counts as the share of a seen one its quiet time
    # gives (Louis' identity)
    full = np.concatenate([c["stayed"][..., None], c["dropped"][..., None], c["advanced"]], axis=-1).astype(float)
    n = full.sum(-1)
    keep = np.where(n > 0, np.maximum(n - c.get("uncertain", 0.0), 0.0) / np.where(n > 0, n, 1.0), 0.0)
    outcome = _relative(probs, _pooled_outcomes(rng, full * keep[..., None], m, D, _valid_outcomes(S)))
    if model.sequences and "first_in_stage" in c:  # shares are of a stage's first interactions then
        share = _relative(model.share, _pooled_shares(rng, c["first_in_stage"].astype(float), m, D))
    else:
        share = _relative(model.share, _pooled_shares(rng, c["interactions"].astype(float), m, D))
    follow = None
    if model.sequences:  # each next-touchpoint row: Dirichlet with the pairs behind it, the row's rate kept
        rows = model.follow.sum(-1, keepdims=True)
        unit = model.follow / np.where(rows > 0, rows, 1.0)
        pairs = c["followed"].sum(-1, keepdims=True) if "followed" in c else np.zeros_like(rows)
        follow = _dirichlet(rng, (pairs + m) * unit, D) * rows[None]
    conc = np.maximum(c["entered"] - c.get("uncertain_lapse", 0.0), 0.0) + m
    lapse = _beta(rng, conc * model.lapse, conc * (1.0 - model.lapse), D)
    rate = model.rate * _gamma_ratio(rng, c["gaps"] + m, D)
    speed = model.leave_speed.copy()[None].repeat(D, axis=0)
    if "leave_events" in c:
        speed = speed * _gamma_ratio(rng, c["leave_events"] + m, D)
    customers = np.maximum(c["customers"].astype(float), 0.0)
    if customers.sum() > 0:
        mix = _dirichlet(rng, customers, D)
    else:  # a model without customer counts keeps its mix
        mix = np.broadcast_to(model.persona_share, (D, P))

    out = []
    for d in range(D):
        o = outcome[d]
        drop, advance = o[..., 1], o[..., 2:]
        sh = share[d].copy()
        sh[:, ~live] = 0.0
        lp = lapse[d].copy()
        lp[:, 0] = 0.0
        lp[:, ~live] = 0.0
        rt = rate[d].copy()
        rt[:, ~live] = 0.0
        out.append(Model(
            stages=model.stages, touchpoints=model.touchpoints, personas=model.personas,
            conversion_stage=model.conversion_stage, persona_share=np.array(mix[d]), share=sh,
            advance=advance * live[None, :, None, None], drop=drop * live[None, :, None], lapse=lp, rate=rt,
            leave_speed=speed[d], arrival_days=model.arrival_days, estimator=model.estimator,
            follow=None if follow is None else follow[d],
            phases=model.phases,  # replaced below where the model has shapes
        ))
    if model.extras.get("value"):  # drawn last but the shapes: every other parameter's draws stay as they were
        from sim.money import draw_sections

        for m, section in zip(out, draw_sections(model.extras["value"], rng, D)):
            m.extras["value"] = section
    if model.shaped:  # after everything else: a model without shapes uses the stream exactly as before
        for m, weights in zip(out, phase_draws(model, rng, D)):
            m.phases = weights
    return out


def phase_draws(model: Model, rng: np.random.Generator, D: int) -> np.ndarray:
    """Phase weights [D, P, S, 1 + S, K] drawn as the estimator pools them (see the module docstring).

    A way out's evidence is its timed exits (``counts["leave_events"]``) spread over the phase counts
    by the fitted weights; weights fitted at 0 (phase counts BIC did not choose) stay 0, and a
    one-phase stay stays exponential. Without ``leave_events`` every cell has only the m
    pseudo-visits behind it.
    """
    m = float(model.estimator.get("pooling", {}).get("prior_weight", 10.0))
    weights = np.asarray(model.phases, dtype=float)
    exits = np.asarray(model.counts.get("leave_events", np.zeros(weights.shape[:-1])), dtype=float)
    counts = np.maximum(exits, 0.0)[..., None] * weights  # [P, S, 1 + S, K]
    drawn = _relative(weights, _pooled_shares(rng, counts, m, D))
    # renormalised ratios can leave 1e-17 where a weight is exactly 0: keep the support exact
    return np.where(weights > 0, drawn, 0.0)


def _valid_outcomes(S: int) -> np.ndarray:
    """[S, 2 + S]: the outcomes an interaction in stage s can have (stay, drop, a later stage)."""
    valid = np.zeros((S, 2 + S), dtype=bool)
    valid[:, :2] = True
    for s in range(S):
        valid[s, 3 + s:] = True
    return valid


def _shrunk(rng: np.random.Generator, counts: np.ndarray, m: float, parent_mean: np.ndarray,
            parent_draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pooling level: the estimate (counts + m * parent) / (n + m) over the last axis, and its
    draws Dirichlet(counts + m * parent draw), one per parent draw [D, ...]."""
    mean = (counts + m * parent_mean) / np.maximum(counts.sum(-1, keepdims=True) + m, 1e-300)
    return mean, _dirichlet(rng, counts[None] + m * parent_draws, 0, per_draw=True)


def _pooled_shares(rng: np.random.Generator, counts: np.ndarray, m: float, D: int) -> tuple[np.ndarray, np.ndarray]:
    """Touchpoint shares [P, S, T] as the estimator pools them: each persona's toward all personas'."""
    top = counts.sum(axis=0)  # [S, T]
    top_mean = top / np.maximum(top.sum(-1, keepdims=True), 1e-300)
    top_draws = _dirichlet(rng, top + 1e-9, D)  # [D, S, T]
    return _shrunk(rng, counts, m, top_mean[None], top_draws[:, None])


def _pooled_outcomes(rng: np.random.Generator, counts: np.ndarray, m: float, D: int,
                     valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes [P, S, T, K] as the estimator pools them: cell -> all personas -> stage average."""
    stage_tot = counts.sum(axis=(0, 2)) * valid  # [S, K]
    seen = stage_tot.sum(-1, keepdims=True) > 0
    stage_mean = np.where(seen, stage_tot, valid * 1.0)
    stage_mean = stage_mean / stage_mean.sum(-1, keepdims=True)
    stage_draws = _dirichlet(rng, np.where(seen, stage_tot, valid * 1.0) + 1e-9 * valid, D)  # [D, S, K]
    tp_mean, tp_draws = _shrunk(rng, counts.sum(axis=0), m, stage_mean[:, None], stage_draws[:, :, None])
    return _shrunk(rng, counts, m, tp_mean[None], tp_draws[:, None])


def _relative(values: np.ndarray, drawn: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The calibrated ``values`` moved as the pooled draws move from their mean, rows renormalised
    (``values`` are the pooled estimate itself, unless the dwell fit rescaled them)."""
    mean, draws = drawn
    ratio = np.where(mean > 0, draws / np.where(mean > 0, mean, 1.0), 0.0)
    out = values[None] * ratio
    total = out.sum(-1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), values[None])


def _gamma(rng: np.random.Generator, alpha: np.ndarray, D: int) -> np.ndarray:
    """Gamma(alpha) draws [D, ...]; a zero shape gives exactly 0 (a cell that cannot happen stays so)."""
    alpha = np.maximum(np.asarray(alpha, dtype=float), 0.0)
    return rng.standard_gamma(np.broadcast_to(alpha, (D, *alpha.shape)))


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray, D: int, per_draw: bool = False) -> np.ndarray:
    """Dirichlet draws over the last axis [D, ...]; rows with no mass keep zeros. With ``per_draw``
    ``alpha`` already has the draws' axis first (each draw its own parameters)."""
    g = rng.standard_gamma(np.maximum(alpha, 0.0)) if per_draw else _gamma(rng, alpha, D)
    total = g.sum(-1, keepdims=True)
    return np.where(total > 0, g / np.where(total > 0, total, 1.0), 0.0)


def _beta(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, D: int) -> np.ndarray:
    x, y = _gamma(rng, a, D), _gamma(rng, b, D)
    return np.where(x + y > 0, x / np.where(x + y > 0, x + y, 1.0), 0.0)


def _gamma_ratio(rng: np.random.Generator, shape: np.ndarray, D: int) -> np.ndarray:
    """Gamma(shape) / shape: a relative error with mean 1 and variance 1 / shape."""
    shape = np.maximum(np.asarray(shape, dtype=float), 1e-9)
    return _gamma(rng, shape, D) / shape


@dataclass
class Interval:
    """A data interval of one projected number over the parameter draws."""

    values: np.ndarray  # one value per draw

    @property
    def bounds(self) -> list[float]:
        """The central interval's lower and upper bounds."""
        lo, hi = np.quantile(self.values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        return [float(lo), float(hi)]

    @property
    def probability_positive(self) -> float:
        """The share of draws above zero."""
        return float(np.mean(self.values > 0))

    @property
    def sd(self) -> float:
        """The standard deviation over the draws."""
        return float(self.values.std(ddof=1)) if self.values.size > 1 else 0.0


def over_draws(models: Sequence[Model], value: Callable[[Model], np.ndarray | float]) -> np.ndarray:
    """``value`` of every draw, stacked [D, ...]."""
    return np.array([value(m) for m in models])


def combined(centre: float, sim_ci: Sequence[float], expected: float, data: Sequence[float]) -> list[float]:
    """Data and simulation together: each side's half-widths added in quadrature around ``centre``."""
    lo = centre - float(np.hypot(expected - data[0], centre - sim_ci[0]))
    hi = centre + float(np.hypot(data[1] - expected, sim_ci[1] - centre))
    return [lo, hi]


def customers_to_tell(interval: Interval, expected: float, n: int | None) -> int | None:
    """Roughly how many real customers the calibration would need for its 95 % interval to exclude 0
    (the interval narrows like 1 / sqrt(customers)); None when it already does or cannot be said."""
    lo, hi = interval.bounds
    if n is None or n <= 0 or lo > 0 or hi < 0 or expected == 0:
        return None
    half = max(expected - lo, 1e-300) if expected > 0 else max(hi - expected, 1e-300)
    need = n * (half / abs(expected)) ** 2
    return int(np.ceil(need / 1000.0) * 1000) if np.isfinite(need) else None


# ---- projected numbers over the draws ---------------------------------------------------------------
@dataclass
class Drawn:
    """Exact outcomes of one target (base or scenario) on every parameter draw."""

    conversion: np.ndarray  # [D]
    reach: np.ndarray  # [D, S] overall reach of each stage
    persona_conversion: np.ndarray  # [D, P]
    revenue: np.ndarray | None = None  # [D] expected revenue per customer, where the models have values
    persona_revenue: np.ndarray | None = None  # [D, P]


def scenario_draws(models: Sequence[Model], scenario) -> list[Model]:
    """The same draws with a scenario applied to each (``scenario`` None: the draws themselves)."""
    if scenario is None:
        return list(models)
    from sim.scenario import apply

    return [apply(m, scenario, file=scenario.source) for m in models]


def evaluate_draws(models: Sequence[Model], horizon_days: float | None = None) -> Drawn:
    """Conversion, reach and per-persona conversion of every draw, exactly (no simulation)."""
    from sim.exact import evaluate
    from sim.money import has_values, revenue_by_persona

    exacts = [evaluate(m, horizon_days=horizon_days) for m in models]
    drawn = Drawn(conversion=np.array([e.conversion_rate for e in exacts]),
                  reach=np.array([e.reach_overall for e in exacts]),
                  persona_conversion=np.array([e.conversion_by_persona for e in exacts]))
    if models and has_values(models[0]):
        drawn.persona_revenue = np.array([revenue_by_persona(m, e) for m, e in zip(models, exacts)])
        drawn.revenue = np.array([m.persona_share @ r for m, r in zip(models, drawn.persona_revenue)])
    return drawn


def describe(model: Model, draws: int) -> dict:
    """What the data intervals include, for the JSON records."""
    not_included, method = NOT_INCLUDED, METHOD
    if model.shaped:  # the text of models without shapes stays as it was (output hashes)
        method += SHAPE_METHOD
        not_included += ("; the phase counts of the phase-type stays (chosen by BIC and kept: their weights "
                         "are drawn, a phase count BIC left out stays out)")
    return {"draws": int(draws), "level": LEVEL, "customers_behind_model": real_customers(model),
            "method": method, "not_included": not_included}
