"""hotspots' attribution against an independent first-order Markov attribution (issue 13).

The world: two stages (visit, then buy, which is final), one persona, six channels. Each
interaction meets channel c with share w_c, then converts with a_c, ends the journey with d_c, or
the customer stays and meets a next channel drawn by share again. That is exactly a first-order
Markov chain over channels (start -> c with w_c; c -> conversion a_c, null d_c, c' with
(1 - a_c - d_c) w_c'), so journey's removal effect (``lose_journeys`` on every cell of the
channel) must be Markov attribution's:
  * on the true model, to 1e-9 (both exact);
  * calibrated from a log of 30 k journeys, against the Markov attribution counted from the same
    log's paths: within 0.03 absolute (removal effects and attributed shares), same ranking.
Every journey ends long before the log does, so censoring plays no role. The Markov computation
below is the textbook one (ChannelAttribution's), written here without any journey code.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from sim.exact import evaluate
from sim.hotspots import attribution, hotspots_record
from sim.model import Model
from sim.scenario import with_touchpoint_removed

CHANNELS = ("search", "social", "email", "display", "affiliate", "direct")
W = np.array([0.23, 0.20, 0.10, 0.11, 0.07, 0.29])  # share of interactions
A = np.array([0.23, 0.13, 0.07, 0.23, 0.03, 0.06])  # P(the interaction converts)
D = np.array([0.05, 0.23, 0.12, 0.09, 0.34, 0.13])  # P(it ends the journey)
# true removal effects 0.63, 0.46, 0.27, 0.37, 0.15, 0.54: every two at least 0.079 apart
N_PATHS = 30_000
TOL = 0.03  # absolute, on removal effects and attributed shares; sampling noise at 30 k is ~0.005
SEED = 1313
runner = CliRunner()


# ---- first-order Markov attribution, from paths or from a transition matrix ------------------------
START, CONV, NULL = "(start)", "(conversion)", "(null)"


def transition_matrix(paths: list[tuple[list[str], bool]], channels) -> tuple[list[str], np.ndarray]:
    """Row-normalised transition counts over start, the channels, conversion and null."""
    states = [START, *channels, CONV, NULL]
    idx = {s: i for i, s in enumerate(states)}
    counts = np.zeros((len(states), len(states)))
    for touches, converted in paths:
        seq = [START, *touches, CONV if converted else NULL]
        for a, b in zip(seq, seq[1:]):
            counts[idx[a], idx[b]] += 1
    counts[idx[CONV], idx[CONV]] = counts[idx[NULL], idx[NULL]] = 1.0  # absorbing
    return states, counts / counts.sum(axis=1, keepdims=True)


def p_conversion(states: list[str], M: np.ndarray, removed: str | None = None) -> float:
    """P(absorbed in conversion from start); a removed channel's incoming transitions go to null."""
    M = M.copy()
    if removed is not None:
        r = states.index(removed)
        M[:, states.index(NULL)] += M[:, r]
        M[:, r] = 0.0
        M[r] = 0.0
        M[r, states.index(NULL)] = 1.0
    transient = [i for i, s in enumerate(states) if s not in (CONV, NULL)]
    Q = M[np.ix_(transient, transient)]
    R = M[transient, states.index(CONV)]
    x = np.linalg.solve(np.eye(len(transient)) - Q, R)
    return float(x[transient.index(states.index(START))])


def markov_attribution(states: list[str], M: np.ndarray, channels) -> tuple[dict[str, float], dict[str, float]]:
    """Removal effect 1 - P(conv | c removed) / P(conv) per channel, and the effects normalised."""
    base = p_conversion(states, M)
    effect = {c: 1.0 - p_conversion(states, M, c) / base for c in channels}
    total = sum(effect.values())
    return effect, {c: e / total for c, e in effect.items()}


def true_matrix(w=W, a=A, d=D) -> tuple[list[str], np.ndarray]:
    states = [START, *CHANNELS, CONV, NULL]
    T = len(CHANNELS)
    M = np.zeros((T + 3, T + 3))
    M[0, 1:T + 1] = w
    M[1:T + 1, 1:T + 1] = (1.0 - a - d)[:, None] * w[None, :]
    M[1:T + 1, T + 1] = a
    M[1:T + 1, T + 2] = d
    M[T + 1, T + 1] = M[T + 2, T + 2] = 1.0
    return states, M


# ---- the journey world and its log -----------------------------------------------------------------
def true_model() -> Model:
    T = len(CHANNELS)
    share = np.zeros((1, 2, T))
    share[0, 0] = W
    advance = np.zeros((1, 2, T, 2))
    advance[0, 0, :, 1] = A
    drop = np.zeros((1, 2, T))
    drop[0, 0] = D
    model = Model(stages=["visit", "buy"], touchpoints=list(CHANNELS), personas=["all"], conversion_stage="buy",
                  persona_share=np.ones(1), share=share, advance=advance, drop=drop, lapse=np.zeros((1, 2)),
                  rate=np.full((1, 2), 2.0))
    model.check()
    return model


def simulate_paths(rng: np.random.Generator, n: int, first: np.ndarray, nxt: np.ndarray,
                   a=A, d=D) -> list[tuple[list[str], bool]]:
    """n journeys: first channel ~ ``first``, next channel ~ ``nxt[last]``; after each touch convert
    with a[c], drop with d[c], else go on. All journeys step together (vectorised)."""
    channel = np.searchsorted(np.cumsum(first), rng.random(n) * first.sum(), side="right")
    cum = np.cumsum(nxt, axis=1)
    touches: list[list[str]] = [[] for _ in range(n)]
    converted = np.zeros(n, dtype=bool)
    alive = np.arange(n)
    while alive.size:
        c = channel[alive]
        for i, ch in zip(alive, c):
            touches[i].append(CHANNELS[ch])
        u = rng.random(alive.size)
        converted[alive[u < a[c]]] = True
        go_on = u >= a[c] + d[c]
        alive, c = alive[go_on], c[go_on]
        v = rng.random(alive.size)[:, None] * cum[c, -1:]
        channel[alive] = np.minimum((v >= cum[c]).sum(axis=1), len(first) - 1)
    return list(zip(touches, converted.tolist()))


def write_log(paths, rng: np.random.Generator, path) -> None:
    """One row per touch (stage after it: buy on the converting touch), arrivals over 180 days, gaps
    of 0.5 days on average. One converted journey is moved 400 days later, so the log ends more than
    a year after every other journey: none is still in progress (no censoring)."""
    base = np.datetime64("2024-01-01T00:00:00", "ms")
    late = next(i for i, (_, converted) in enumerate(paths) if converted)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["customer_id", "timestamp", "touchpoint", "stage"])
        for i, (touches, converted) in enumerate(paths):
            t = rng.uniform(0, 180) + (400.0 if i == late else 0.0)
            for k, channel in enumerate(touches):
                if k:
                    t += rng.exponential(0.5)
                stage = "buy" if converted and k == len(touches) - 1 else "visit"
                stamp = base + np.timedelta64(int(round(t * 86_400_000)), "ms")
                out.writerow([f"c{i}", f"{stamp}Z", channel, stage])


def read_paths(path) -> list[tuple[list[str], bool]]:
    """The paths as a Markov tool would read them from the log: touches in time order per customer."""
    rows: dict[str, list[tuple[str, str, str]]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.setdefault(r["customer_id"], []).append((r["timestamp"], r["touchpoint"], r["stage"]))
    paths = []
    for touches in rows.values():
        touches.sort()
        paths.append(([t for _, t, _ in touches], touches[-1][2] == "buy"))
    return paths


def iid_next() -> np.ndarray:
    return np.tile(W, (len(CHANNELS), 1))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """(hotspots record of the model calibrated from the log, the log's paths)."""
    folder = tmp_path_factory.mktemp("attribution")
    rng = np.random.default_rng(SEED)
    write_log(simulate_paths(rng, N_PATHS, W, iid_next()), rng, folder / "events.csv")
    result = runner.invoke(app, ["calibrate", str(folder / "events.csv"), "--stages", "visit,buy",
                                 "--conversion-stage", "buy", "--out", str(folder / "model.json")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["hotspots", str(folder / "model.json"), "--out", str(folder / "hot.json")])
    assert result.exit_code == 0, result.output
    assert "removal effect (as in Markov attribution)" in result.output


    return json.loads((folder / "hot.json").read_text()), read_paths(folder / "events.csv")


# ---- tests -------------------------------------------------------------------------------------------
def test_exact_removal_effect_is_markov_attribution_on_the_true_chain():
    model = true_model()
    effect, share = markov_attribution(*true_matrix(), CHANNELS)
    rows = {r["touchpoint"]: r for r in attribution(model)}
    assert set(rows) == set(CHANNELS)
    for c in CHANNELS:
        assert rows[c]["removal_effect"] == pytest.approx(effect[c], abs=1e-9)
        assert rows[c]["attributed_share"] == pytest.approx(share[c], abs=1e-9)
    conv = evaluate(model).conversion_rate
    assert conv == pytest.approx(p_conversion(*true_matrix()), abs=1e-12)
    for c in CHANNELS:
        assert rows[c]["conversions_per_1000_attributed"] == pytest.approx(1000 * share[c] * conv, rel=1e-9)
    # largest first; the world's channels are clearly apart
    assert [r["touchpoint"] for r in attribution(model)] == sorted(CHANNELS, key=lambda c: -effect[c])
    assert min(abs(effect[a] - effect[b]) for a in CHANNELS for b in CHANNELS if a != b) > 0.07


def test_remove_is_a_different_counterfactual():
    """``remove = true`` (customers meet their other channels instead) loses far less than Markov's
    removal: the two must not be confused, and this test fails if attribution used the other one."""
    model = true_model()
    effect, _ = markov_attribution(*true_matrix(), CHANNELS)
    base = evaluate(model).conversion_rate
    for t, c in enumerate(CHANNELS):
        mask = np.zeros(model.share.shape, dtype=bool)
        mask[:, 0, t] = True
        gone = with_touchpoint_removed(model, mask, where="test")
        redirected = 1.0 - evaluate(gone).conversion_rate / base
        assert abs(redirected - effect[c]) > 0.1, c
    hot = hotspots_record(model, name="true", top=20)
    uplift = {h["touchpoint"]: h["uplift_if_removed"] for h in hot.hotspots}
    for r in hot.attribution:
        assert abs(-uplift[r["touchpoint"]] / base - r["removal_effect"]) > 0.1


def test_calibrated_attribution_matches_markov_attribution_on_the_same_paths(calibrated):
    record, paths = calibrated
    assert len(paths) == N_PATHS
    effect, share = markov_attribution(*transition_matrix(paths, CHANNELS), CHANNELS)
    rows = {r["touchpoint"]: r for r in record["attribution"]}
    diff = max(max(abs(rows[c]["removal_effect"] - effect[c]), abs(rows[c]["attributed_share"] - share[c]))
               for c in CHANNELS)
    assert diff < TOL, (diff, rows, effect)
    ranked = [r["touchpoint"] for r in record["attribution"]]
    assert ranked == sorted(CHANNELS, key=lambda c: -effect[c])  # every two true effects >= 0.079 apart
    assert sum(r["attributed_share"] for r in record["attribution"]) == pytest.approx(1.0, abs=1e-9)
    # and both near the truth (the sample is large enough for the comparison to mean something)
    true_effect, _ = markov_attribution(*true_matrix(), CHANNELS)
    assert max(abs(effect[c] - true_effect[c]) for c in CHANNELS) < TOL
    assert "Markov" in record["attribution_note"]


def test_attribution_within_a_horizon_counts_only_conversions_in_time():
    model = true_model()
    within = {r["touchpoint"]: r for r in attribution(model, horizon_days=1.0)}
    full = {r["touchpoint"]: r for r in attribution(model)}
    conv = evaluate(model, horizon_days=1.0).conversion_rate
    assert conv < evaluate(model).conversion_rate
    for c in CHANNELS:
        assert 0.0 <= within[c]["removal_effect"] <= 1.0
        assert within[c]["conversions_per_1000_attributed"] == pytest.approx(
            1000 * within[c]["attributed_share"] * conv, rel=1e-9)
    assert any(abs(within[c]["removal_effect"] - full[c]["removal_effect"]) > 1e-3 for c in CHANNELS)
