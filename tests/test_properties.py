"""Property tests (hypothesis): random valid models and random what-if changes.

Every model here is drawn by ``models()``: random numbers of personas, stages and touchpoints,
Dirichlet shares (some touchpoints unseen in some stages), drop + advance <= 1 with skips, lapses
and rates. Statistical checks use fixed seeds (derandomize) and bounds of 5 standard errors.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from calibration.estimate import estimate
from calibration.load import load_events
from sim.engines import fast
from sim.errors import InputError
from sim.exact import evaluate
from sim.model import Model
from sim.scenario import Scenario, apply, with_drop_scaled
from worlds import simulate_log

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STAT = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
LEVERS = ("drop_off", "advance", "exposure")
Z = 5.0

_name_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6)


def _names(draw, n: int, prefix: str, fancy: bool) -> list[str]:
    if fancy:
        return draw(st.lists(_name_text, min_size=n, max_size=n, unique=True))
    return [f"{prefix}{i}" for i in range(n)]


@st.composite
def models(draw, *, max_personas: int = 3, max_stages: int = 5, max_touchpoints: int = 4,
           min_leave: float = 0.05, min_rate: float = 0.1, fancy_names: bool = False) -> Model:
    """A random valid Model (every non-final cell leaves its stage with probability >= min_leave)."""
    P = draw(st.integers(1, max_personas))
    S = draw(st.integers(2, max_stages))
    T = draw(st.integers(1, max_touchpoints))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sparse = draw(st.booleans())
    share = np.zeros((P, S, T))
    advance = np.zeros((P, S, T, S))
    drop = np.zeros((P, S, T))
    for p in range(P):
        for s in range(S - 1):
            w = rng.dirichlet(np.full(T, 0.7))
            if sparse and T > 1:  # some touchpoints are not met in some stages
                off = rng.random(T) < 0.3
                off[rng.integers(T)] = False
                w[off] = 0.0
            share[p, s] = w / w.sum()
            leave = rng.uniform(min_leave, 1.0, T)
            frac = rng.uniform(0.0, 1.0, T)
            frac[rng.random(T) < 0.1] = 0.0  # cells that never advance
            drop[p, s] = leave * (1.0 - frac)
            advance[p, s, :, s + 1:] = (leave * frac)[:, None] * rng.dirichlet(np.ones(S - 1 - s), T)
    lapse = rng.uniform(0.0, 0.5, (P, S)) * (rng.random((P, S)) < 0.7)
    lapse[:, -1] = 0.0
    rate = rng.uniform(min_rate, 2.0, (P, S))
    rate[:, -1] = 0.0
    stages = _names(draw, S, "s", fancy_names)
    model = Model(stages=stages, touchpoints=_names(draw, T, "t", fancy_names),
                  personas=_names(draw, P, "p", fancy_names),
                  conversion_stage=stages[draw(st.integers(1, S - 1))],
                  persona_share=rng.dirichlet(np.ones(P)), share=share, advance=advance, drop=drop,
                  lapse=lapse, rate=rate, arrival_days=float(rng.uniform(1.0, 365.0)))
    model.check()
    return model


factors = st.one_of(st.floats(0.01, 20.0), st.just(1.0), st.sampled_from([1e-9, 0.5, 2.0, 1e9]))


@st.composite
def changes(draw, model: Model, *, levers=LEVERS + ("remove",)) -> dict:
    """One [[change]] table for ``model``: a touchpoint, maybe a stage and a persona, a lever."""
    rec: dict = {"touchpoint": draw(st.sampled_from(model.touchpoints))}
    stage = draw(st.none() | st.sampled_from(model.stages[:-1]))
    persona = draw(st.none() | st.sampled_from(model.personas))
    if stage is not None:
        rec["stage"] = stage
    if persona is not None:
        rec["persona"] = persona
    lever = draw(st.sampled_from(levers))
    if lever == "remove":
        rec["remove"] = True
    else:
        rec[lever] = draw(factors)
    return rec


def scenario(*change: dict, **extra) -> Scenario:
    return Scenario.model_validate({"model": "model.json", "change": list(change), **extra})


def cells(model: Model, rec: dict) -> np.ndarray:
    """Boolean [P, S, T] of the cells a change names (non-final stages)."""
    mask = np.zeros((model.n_personas, model.n_stages, model.n_touchpoints), dtype=bool)
    ps = [model.personas.index(rec["persona"])] if "persona" in rec else range(model.n_personas)
    ss = [model.stages.index(rec["stage"])] if "stage" in rec else range(model.n_stages - 1)
    for p in ps:
        for s in ss:
            mask[p, s, model.touchpoints.index(rec["touchpoint"])] = True
    return mask


def assert_valid(m: Model) -> None:
    for name in ("persona_share", "share", "advance", "drop", "lapse"):
        arr = getattr(m, name)
        assert np.all(np.isfinite(arr)) and arr.min() >= 0.0 and arr.max() <= 1.0, name
    assert np.all(m.drop + m.advance.sum(-1) <= 1.0 + 1e-12)
    assert np.allclose(m.share[:, :-1].sum(-1), 1.0, atol=1e-9, rtol=0)
    assert math.isclose(m.persona_share.sum(), 1.0, abs_tol=1e-9)
    m.check()


def arrays(m: Model) -> dict[str, np.ndarray]:
    return {k: getattr(m, k) for k in ("persona_share", "share", "advance", "drop", "lapse", "rate")}


# ---- scenario changes ------------------------------------------------------------------------
@FAST
@given(st.data())
def test_any_changes_keep_probabilities_valid_and_leave_the_input_alone(data):
    model = data.draw(models())
    before = copy.deepcopy(arrays(model))
    recs = data.draw(st.lists(changes(model), min_size=1, max_size=4))
    try:
        out = apply(model, scenario(*recs), file="what-if.toml")
    except InputError as exc:  # removing the only touchpoint met in a stage is refused, nothing else
        assert "only touchpoint" in str(exc) and "what-if.toml" in str(exc)
        return
    assert_valid(out)
    for k, v in arrays(model).items():  # apply is pure
        assert np.array_equal(v, before[k]), k
    assert np.array_equal(out.lapse, model.lapse)
    # every touchpoint's own rate (rate x share) is kept, but for the touchpoint a change names
    named = np.zeros(model.n_touchpoints, dtype=bool)
    for rec in recs:
        named[model.touchpoints.index(rec["touchpoint"])] = True
    own_old = model.rate[:, :-1, None] * model.share[:, :-1]
    own_new = out.rate[:, :-1, None] * out.share[:, :-1]
    assert np.allclose(own_new[..., ~named], own_old[..., ~named], rtol=1e-9, atol=1e-300)


@FAST
@given(st.data())
def test_a_change_touches_only_its_cells(data):
    model = data.draw(models())
    rec = data.draw(changes(model, levers=("drop_off", "advance")))
    out = apply(model, scenario(rec))
    mask = cells(model, rec)
    assert np.array_equal(out.drop[~mask], model.drop[~mask])
    assert np.array_equal(out.advance[~mask], model.advance[~mask])
    assert np.array_equal(out.share, model.share)
    if "drop_off" in rec and rec["drop_off"] <= 1.0:  # no cap below 1: exactly the product
        assert np.allclose(out.drop[mask], model.drop[mask] * rec["drop_off"], rtol=1e-12, atol=0)
    if "advance" in rec and rec["advance"] <= 1.0:
        assert np.allclose(out.advance[mask], model.advance[mask] * rec["advance"], rtol=1e-12, atol=0)


@FAST
@given(st.data())
def test_exposure_multiplies_the_touchpoints_own_rate_only(data):
    model = data.draw(models(max_touchpoints=5))
    assume(model.n_touchpoints >= 2)
    rec = data.draw(changes(model, levers=("exposure",)))
    out = apply(model, scenario(rec))
    assert np.allclose(out.share[:, :-1].sum(-1), 1.0, atol=1e-12, rtol=0)
    t = model.touchpoints.index(rec["touchpoint"])
    mask = cells(model, rec)
    f = rec["exposure"]
    for p, s in zip(*np.nonzero(mask.any(-1))):
        old, new = model.share[p, s] * model.rate[p, s], out.share[p, s] * out.rate[p, s]  # own rates
        assert new[t] == pytest.approx(old[t] * f, rel=1e-9, abs=1e-300)
        others = np.arange(model.n_touchpoints) != t
        assert np.allclose(new[others], old[others], rtol=1e-9, atol=1e-300)
    untouched = ~mask.any(-1)
    assert np.array_equal(out.share[untouched], model.share[untouched])
    assert np.array_equal(out.rate[untouched], model.rate[untouched])


@FAST
@given(st.data())
def test_remove_gives_the_share_to_the_others_in_proportion(data):
    model = data.draw(models(max_touchpoints=5))
    rec = data.draw(changes(model, levers=("remove",)))
    try:
        out = apply(model, scenario(rec))
    except InputError:
        t = model.touchpoints.index(rec["touchpoint"])
        mask = cells(model, rec)
        assert np.any(model.share[mask.any(-1)][:, t] >= 1.0 - 1e-12)  # it was the only one somewhere
        return
    t = model.touchpoints.index(rec["touchpoint"])
    mask = cells(model, rec)
    assert np.all(out.share[mask] == 0.0)
    assert np.allclose(out.share[:, :-1].sum(-1), 1.0, atol=1e-12, rtol=0)
    for p, s in zip(*np.nonzero(mask.any(-1))):
        keep = np.arange(model.n_touchpoints) != t
        assert np.allclose(out.share[p, s, keep], model.share[p, s, keep] / (1.0 - model.share[p, s, t]),
                           rtol=1e-9)


@FAST
@given(st.data())
def test_a_factor_of_one_is_the_identity(data):
    model = data.draw(models())
    tp = data.draw(st.sampled_from(model.touchpoints))
    recs = [{"touchpoint": tp, lever: 1.0} for lever in LEVERS]
    for sc in (scenario(), scenario(*recs)):
        out = apply(model, sc)
        for k, v in arrays(model).items():
            assert np.array_equal(getattr(out, k), v), k
    mask = np.ones(model.share.shape, dtype=bool)
    same = with_drop_scaled(model, mask, 1.0)
    assert np.array_equal(same.drop, model.drop)


@FAST
@given(st.data())
def test_expected_conversion_is_monotone_in_a_drop_off_factor(data):
    model = data.draw(models())
    rec = data.draw(changes(model, levers=("drop_off",)))
    fs = sorted(data.draw(st.lists(st.floats(0.01, 10.0), min_size=2, max_size=4)) + [1.0])
    conv = [evaluate(apply(model, scenario(dict(rec, drop_off=f)))).conversion_rate for f in fs]
    base = evaluate(model).conversion_rate
    assert conv[fs.index(1.0)] == base
    assert all(a >= b - 1e-12 for a, b in zip(conv, conv[1:])), (fs, conv)
    # uplift against the base: >= 0 for factors below 1, <= 0 above
    assert all((c - base >= -1e-12) if f <= 1 else (c - base <= 1e-12) for f, c in zip(fs, conv))


# ---- exact evaluator ---------------------------------------------------------------------------
@FAST
@given(models(), st.floats(0.5, 400.0))
def test_reach_rates_are_probabilities_non_increasing_across_stages(model, horizon):
    full = evaluate(model)
    within = evaluate(model, horizon_days=horizon)
    later = evaluate(model, horizon_days=horizon * 2)
    for ex in (full, within, later):
        assert np.all(ex.reach >= -1e-12) and np.all(ex.reach <= 1 + 1e-12)
        assert np.all(np.diff(ex.reach, axis=1) <= 1e-12)
        assert np.all(ex.reach[:, 0] == 1.0)
        assert 0.0 <= ex.conversion_rate <= 1.0 + 1e-12
    # more time, more reach, never beyond following every journey to its end
    assert np.all(within.reach <= later.reach + 1e-9)
    assert np.all(later.reach <= full.reach + 1e-9)
    # every journey ends somewhere: dropped in a stage or completed
    assert np.allclose(full.dropped.sum(1) + full.reach[:, -1], 1.0, atol=1e-9)


@STAT
@given(models(), st.booleans(), st.integers(0, 2**31))
def test_exact_matches_the_fast_engine_within_5_se(model, with_horizon, seed):
    n = 20_000
    horizon = float(np.random.default_rng(seed).uniform(5.0, 120.0)) if with_horizon else None
    sim = fast.run(model, n, np.random.SeedSequence(seed), horizon_days=horizon)
    ex = evaluate(model, horizon_days=horizon)
    assert sim.n == n
    reached = sim.reached.sum(0) / n
    expected = ex.reach_overall
    se = np.sqrt((expected * (1 - expected) + 1.0 / n) / n)  # the 1/n floor: rare stages, Poisson counts
    assert np.all(np.abs(reached - expected) <= Z * se), (reached, expected)
    p = ex.conversion_rate
    assert abs(sim.conversion_rate - p) <= Z * math.sqrt((p * (1 - p) + 1.0 / n) / n)


# ---- model JSON ----------------------------------------------------------------------------------
@FAST
@given(models(fancy_names=True))
def test_model_json_round_trip_keeps_names_and_arrays(model):
    back = Model.from_dict(json.loads(model.to_json()), file="m.json")
    assert (back.stages, back.touchpoints, back.personas) == (model.stages, model.touchpoints, model.personas)
    assert back.conversion_stage == model.conversion_stage
    for k, v in arrays(model).items():
        assert getattr(back, k).shape == v.shape
        assert np.allclose(getattr(back, k), v, rtol=0, atol=1e-9), k
    assert back.arrival_days == pytest.approx(model.arrival_days, abs=1e-9)
    assert back.to_json() == Model.from_dict(json.loads(back.to_json())).to_json()  # a fixed point


# ---- calibration recovers a simulated model ------------------------------------------------------
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(models(max_personas=2, max_stages=4, max_touchpoints=3, min_leave=0.15, min_rate=0.5),
       st.integers(0, 2**31))
def test_calibration_recovers_expected_conversion(tmp_path_factory, model, seed):
    """Fully observed journeys, no pooling: the fitted model is the plug-in estimate of the true one.

    Its miss in expected conversion is of binomial size (over 80 random models: z sd 1.26, max 3.1),
    so 5 binomial standard errors of n customers bound it.
    """
    n = 4_000
    log = simulate_log(model, n, seed=seed, arrival_days=60.0, observe_days=60.0 + 2_000.0)
    path = tmp_path_factory.mktemp("cal") / "events.csv"
    log.events.to_csv(path, index=False)
    fitted = estimate(load_events(path, stages=",".join(model.stages), conversion_stage=model.conversion_stage),
                      pooling=0.0)
    truth = evaluate(model).conversion_rate
    got = evaluate(fitted).conversion_rate
    se = math.sqrt((truth * (1 - truth) + 1.0 / n) / n)
    assert abs(got - truth) <= Z * se, (got, truth, se)
    # and the observed share of converted customers agrees as well (the simulated log is the truth)
    observed = float(np.mean(log.highest >= model.conversion_index))
    assert abs(observed - truth) <= Z * se
