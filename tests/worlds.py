"""Known-truth worlds: a true Model and an event log simulated from it interaction by interaction.

Independent of the product's engines (which draw whole stages at once): this generator walks each
journey one interaction at a time, so agreement between the two is a real check.

Way-out-specific dwell (``Model.leave_speed`` != 1) is walked interaction by interaction too, from the
arrays alone (not ``Model.way_out`` / ``sim.exact``): on entering a stage the way out is drawn, then each
gap is exponential with rate ``stay_rate + mu_o`` and the next interaction is the leaving one with
probability ``mu_o / (stay_rate + mu_o)``. Plain models keep the original code path (same logs).

Non-exponential stays (a model with ``phases``, see ``with_phases``, or ``lognormal_sigma``) are walked
by deadline: on entering a stage the way out and the whole stay D are drawn (k phases with
probability phases[k - 1], then gamma(k) of mean 1 / mu_o; or lognormal of mean 1 / mu_o), staying
interactions come at ``stay_rate`` until D and the leaving one is at D. Again from the arrays alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.model import DEFAULT_STAGES, Model

TOUCHPOINTS = ["ad", "email", "web", "app", "sales_chat", "checkout", "support", "review"]
PERSONAS = ["deal_seeker", "loyalist", "researcher"]


def make_world(seed: int = 0, *, personas=PERSONAS, touchpoints=TOUCHPOINTS,
               stages=DEFAULT_STAGES, pain_drop: float = 0.35) -> Model:
    """A random but plausible true model with a checkout pain point and stage skips."""
    rng = np.random.default_rng(seed)
    P, S, T = len(personas), len(stages), len(touchpoints)
    share = np.zeros((P, S, T))
    advance = np.zeros((P, S, T, S))
    drop = np.zeros((P, S, T))
    for p in range(P):
        for s in range(S - 1):
            w = rng.gamma(2.0, 1.0, T)
            w[rng.random(T) < 0.2] = 0.0  # some touchpoints are not met in some stages
            w[0] += 0.5
            share[p, s] = w / w.sum()
            for t in range(T):
                d = rng.uniform(0.02, 0.12)
                a = rng.uniform(0.10, 0.35)
                adv = np.zeros(S)
                adv[s + 1] = a
                if s + 2 < S:  # a stage skip
                    adv[s + 2] = a * rng.uniform(0.05, 0.25)
                drop[p, s, t] = d
                advance[p, s, t] = adv
    if "checkout" in touchpoints and "consideration" in stages:
        c, k = touchpoints.index("checkout"), list(stages).index("consideration")
        share[:, k, c] = np.maximum(share[:, k, c], 0.2)
        share[:, k] /= share[:, k].sum(axis=-1, keepdims=True)
        drop[:, k, c] = pain_drop
    lapse = rng.uniform(0.05, 0.3, (P, S))
    lapse[:, 0] = 0.0
    lapse[:, -1] = 0.0
    rate = rng.uniform(1 / 8.0, 1 / 2.0, (P, S))
    rate[:, -1] = 0.0
    mix = rng.dirichlet(np.full(P, 5.0))
    model = Model(stages=list(stages), touchpoints=list(touchpoints), personas=list(personas),
                  conversion_stage="decision" if "decision" in stages else stages[-1],
                  persona_share=mix, share=share, advance=advance, drop=drop, lapse=lapse, rate=rate,
                  arrival_days=180.0)
    model.check()
    return model


@dataclass
class Journeys:
    events: pd.DataFrame
    highest: np.ndarray  # [n] highest stage reached (uncensored truth)
    persona: np.ndarray  # [n]
    reach_days: np.ndarray | None = None  # [n, S] days from arrival to first reaching stage >= s (inf: never)


def with_leave_speeds(model: Model, seed: int = 0, *, move=(1.2, 2.5), drop=(0.4, 0.8)) -> Model:
    """A copy of ``model`` whose customers leave each stage at way-out-specific speeds.

    Like real loan logs (approvals leave review sooner than cancellations): moving on is faster
    (speed uniform in ``move``), dropping off slower (uniform in ``drop``). Only ways out the stage
    really has get a speed; the rest stay 1.
    """
    rng = np.random.default_rng(seed)
    out = model.copy()
    P, S = model.n_personas, model.n_stages
    speed = np.ones((P, S, 1 + S))
    for p in range(P):
        for s in range(S - 1):
            speed[p, s, 0] = rng.uniform(*drop)
            speed[p, s, 2 + s:] = rng.uniform(*move, S - 1 - s)
    used = np.concatenate([(model.share * model.drop).sum(-1)[..., None],
                           np.einsum("pst,pstu->psu", model.share, model.advance)], axis=-1) > 0
    out.leave_speed = np.where(used, speed, 1.0)
    out.check()
    return out


def with_phases(model: Model, k: int | list[float] = 3) -> Model:
    """A copy of ``model`` whose every stay is Erlang-k (or takes j phases with probability k[j - 1])."""
    out = model.copy()
    w = np.zeros(k) if isinstance(k, int) else np.asarray(k, dtype=float)
    if isinstance(k, int):
        w[k - 1] = 1.0
    out.phases = np.broadcast_to(w, (model.n_personas, model.n_stages, 1 + model.n_stages, w.size)).copy()
    out.check()
    return out


def simulate_log(model: Model, n_customers: int, seed: int = 1, *, arrival_days: float = 180.0,
                 observe_days: float | None = None, backward_noise: float = 0.0,
                 start: str = "2024-01-01", after_final: float = 0.0,
                 arrival_times: np.ndarray | None = None, lognormal_sigma: float | None = None) -> Journeys:
    """Simulate journeys interaction by interaction; rows after the log's end are cut (censoring).

    ``arrival_times``: each customer's arrival in days after ``start`` (a known arrival pattern);
    default uniform over ``arrival_days``.

    ``observe_days`` is the log's end after the start (default: ``arrival_days``).
    ``backward_noise``: share of non-advancing rows logged with an earlier stage name.
    ``after_final``: P(one extra row after reaching the final stage).
    ``lognormal_sigma``: every stay lognormal of that sigma (mean as the model's), not phase-type.
    """
    rng = np.random.default_rng(seed)
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    end = arrival_days if observe_days is None else observe_days
    persona = rng.choice(P, size=n_customers, p=model.persona_share)
    clock = rng.uniform(0.0, arrival_days, n_customers)
    if arrival_times is not None:
        clock = np.asarray(arrival_times, dtype=float).copy()
    reach_days = np.full((n_customers, S), np.inf)
    reach_days[:, 0] = 0.0
    if model.shaped or lognormal_sigma is not None:
        cols, highest = _walk_deadline(model, rng, persona, clock, reach_days, lognormal_sigma)
        return _journeys(model, cols, persona, highest, reach_days, end, start)
    if not model.plain_dwell:
        cols, highest = _walk_way_out(model, rng, persona, clock, reach_days, backward_noise, after_final)
        return _journeys(model, cols, persona, highest, reach_days, end, start)
    arrival = clock.copy()
    stage = np.zeros(n_customers, dtype=np.int64)
    alive = np.ones(n_customers, dtype=bool)
    highest = np.zeros(n_customers, dtype=np.int64)
    cols: dict[str, list] = {"cid": [], "time": [], "tp": [], "stage": [], "order": []}
    step = 0
    idx = np.arange(n_customers)
    while idx.size:
        p, s = persona[idx], stage[idx]
        # touchpoint
        cum = np.cumsum(model.share[p, s], axis=1)
        t = (rng.random(idx.size)[:, None] > cum).sum(axis=1)
        t = np.minimum(t, T - 1)
        # outcome: drop, advance to u, or stay
        probs = np.concatenate([model.drop[p, s, t][:, None], model.advance[p, s, t]], axis=1)
        cum = np.cumsum(probs, axis=1)
        k = (rng.random(idx.size)[:, None] > cum).sum(axis=1)  # 0 drop, 1+u advance, 1+S stay
        dropped = k == 0
        moved = (k >= 1) & (k <= S)
        done = _log_step(model, rng, cols, idx, step, p, s, t, moved, dropped, np.where(moved, k - 1, s), stage,
                         clock, arrival, reach_days, highest, backward_noise, after_final)
        alive[idx[done]] = False
        idx = idx[~done]
        if idx.size:
            gap = rng.exponential(1.0 / model.rate[persona[idx], stage[idx]])
            clock[idx] += gap
        step += 1
    return _journeys(model, cols, persona, highest, reach_days, end, start)


def _log_step(model: Model, rng: np.random.Generator, cols: dict[str, list], idx: np.ndarray, step: int,
              p: np.ndarray, s: np.ndarray, t: np.ndarray, moved: np.ndarray, dropped: np.ndarray,
              new_stage: np.ndarray, stage: np.ndarray, clock: np.ndarray, arrival: np.ndarray,
              reach_days: np.ndarray, highest: np.ndarray, backward_noise: float, after_final: float) -> np.ndarray:
    """Log one interaction of customers ``idx`` (with optional noise and rows after the final stage),
    move them to ``new_stage``, and return which journeys ended (drop-off, lapse or final stage)."""
    S, T = model.n_stages, model.n_touchpoints
    logged = new_stage.copy()
    if backward_noise > 0:
        noisy = (~moved) & (s > 0) & (rng.random(idx.size) < backward_noise)
        logged[noisy] = rng.integers(0, np.maximum(s[noisy], 1))
    cols["cid"].append(idx)
    cols["time"].append(clock[idx].copy())
    cols["tp"].append(t)
    cols["stage"].append(logged)
    cols["order"].append(np.full(idx.size, step))
    stage[idx] = new_stage
    _reached(reach_days, idx, new_stage, clock[idx] - arrival[idx])
    highest[idx] = np.maximum(highest[idx], new_stage)
    lapsed = moved & (new_stage < S - 1) & (rng.random(idx.size) < model.lapse[p, new_stage])
    done = dropped | lapsed | (new_stage == S - 1)
    if after_final > 0:
        extra = (new_stage == S - 1) & (rng.random(idx.size) < after_final)
        if extra.any():
            e = idx[extra]
            cols["cid"].append(e)
            cols["time"].append(clock[e] + rng.exponential(3.0, e.size))
            cols["tp"].append(rng.integers(0, T, e.size))
            cols["stage"].append(np.full(e.size, S - 1))
            cols["order"].append(np.full(e.size, step))
    return done


def _reached(reach_days: np.ndarray, idx: np.ndarray, stage: np.ndarray, age: np.ndarray) -> None:
    """Record the age at which customers ``idx`` first reach each stage up to ``stage``."""
    for s in range(1, reach_days.shape[1]):
        hit = (stage >= s) & np.isinf(reach_days[idx, s])
        reach_days[idx[hit], s] = age[hit]


def _journeys(model: Model, cols: dict[str, list], persona: np.ndarray, highest: np.ndarray,
              reach_days: np.ndarray, end: float, start: str) -> Journeys:
    """The contract-shaped event log from the walked rows, cut at the log's ``end``."""
    cid = np.concatenate(cols["cid"])
    tm = np.concatenate(cols["time"])
    keep = tm <= end
    frame = pd.DataFrame({
        "customer_id": np.char.add("c", cid[keep].astype(str)),
        "time_days": tm[keep],
        "touchpoint": np.array(model.touchpoints)[np.concatenate(cols["tp"])[keep]],
        "stage": np.array(model.stages)[np.concatenate(cols["stage"])[keep]],
        "persona": np.array(model.personas)[persona[cid[keep]]],
        "order": np.concatenate(cols["order"])[keep],
    })
    frame = frame.sort_values(["time_days", "order"], kind="stable").reset_index(drop=True)
    base = pd.Timestamp(start, tz="UTC")
    frame["timestamp"] = (base + pd.to_timedelta(frame["time_days"], unit="D")).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    events = frame[["customer_id", "timestamp", "touchpoint", "stage", "persona"]]
    return Journeys(events=events, highest=highest, persona=persona, reach_days=reach_days)


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` [n, K] (rows sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    return np.minimum((rng.random(len(probs))[:, None] > cum).sum(axis=1), probs.shape[1] - 1)


def _walk_way_out(model: Model, rng: np.random.Generator, persona: np.ndarray, clock: np.ndarray,
                  reach_days: np.ndarray, backward_noise: float,
                  after_final: float) -> tuple[dict[str, list], np.ndarray]:
    """Journeys under way-out-specific dwell, one interaction at a time (``clock`` advances in place).

    Written from the arrays, not from Model.way_out or sim.exact, so it checks them.
    """
    n = persona.size
    w_exit = np.concatenate([(model.share * model.drop)[..., None], model.share[..., None] * model.advance], -1)
    out = w_exit.sum(axis=2)  # [P, S, 1 + S] P(an interaction leaves by way o)
    q = out.sum(-1)  # [P, S]
    way = out / np.where(q > 0, q, 1.0)[..., None]
    q_exit = w_exit / np.where(out > 0, out, 1.0)[:, :, None, :]  # touchpoint of the leaving interaction
    w_stay = model.share * (1.0 - model.drop - model.advance.sum(-1))
    q_stay = w_stay / np.where(w_stay.sum(-1) > 0, w_stay.sum(-1), 1.0)[..., None]
    stay_rate = model.rate * (1.0 - q)
    mu = (model.rate * q)[..., None] * model.leave_speed  # leave rate per way out [P, S, 1 + S]

    arrival = clock.copy()
    stage = np.zeros(n, dtype=np.int64)
    highest = np.zeros(n, dtype=np.int64)
    way_out = _pick(rng, way[persona, 0])  # drawn at arrival
    leaving = rng.random(n) < q[persona, 0]  # the interaction at arrival leaves with probability q
    cols: dict[str, list] = {"cid": [], "time": [], "tp": [], "stage": [], "order": []}
    idx = np.arange(n)
    step = 0
    while idx.size:
        p, s, o, lv = persona[idx], stage[idx], way_out[idx], leaving[idx]
        t = np.empty(idx.size, dtype=np.int64)
        if lv.any():
            t[lv] = _pick(rng, q_exit[p[lv], s[lv], :, o[lv]])
        if (~lv).any():
            t[~lv] = _pick(rng, q_stay[p[~lv], s[~lv]])
        dropped = lv & (o == 0)
        moved = lv & (o > 0)
        done = _log_step(model, rng, cols, idx, step, p, s, t, moved, dropped, np.where(moved, o - 1, s), stage,
                         clock, arrival, reach_days, highest, backward_noise, after_final)
        entered = idx[moved & ~done]  # a new stage: draw its way out
        if entered.size:
            way_out[entered] = _pick(rng, way[persona[entered], stage[entered]])
        idx = idx[~done]
        if idx.size:
            p, s, o = persona[idx], stage[idx], way_out[idx]
            total = stay_rate[p, s] + mu[p, s, o]
            clock[idx] += rng.exponential(1.0 / total)
            leaving[idx] = rng.random(idx.size) * total < mu[p, s, o]
        step += 1
    return cols, highest


def _walk_deadline(model: Model, rng: np.random.Generator, persona: np.ndarray, clock: np.ndarray,
                   reach_days: np.ndarray, sigma: float | None) -> tuple[dict[str, list], np.ndarray]:
    """Journeys whose stays are drawn whole on entering a stage (phase-type or lognormal), see the module."""
    n = persona.size
    w_exit = np.concatenate([(model.share * model.drop)[..., None], model.share[..., None] * model.advance], -1)
    out = w_exit.sum(axis=2)
    q = out.sum(-1)
    way = out / np.where(q > 0, q, 1.0)[..., None]
    q_exit = w_exit / np.where(out > 0, out, 1.0)[:, :, None, :]
    w_stay = model.share * (1.0 - model.drop - model.advance.sum(-1))
    q_stay = w_stay / np.where(w_stay.sum(-1) > 0, w_stay.sum(-1), 1.0)[..., None]
    stay_rate = model.rate * (1.0 - q)
    mu = (model.rate * q)[..., None] * model.leave_speed
    weights = model.phases if model.phases is not None else np.ones(mu.shape + (1,))

    def stay(p: np.ndarray, s: np.ndarray, o: np.ndarray) -> np.ndarray:
        mean = 1.0 / mu[p, s, o]
        if sigma is not None:
            return mean * rng.lognormal(-0.5 * sigma**2, sigma, p.size)
        k = 1 + _pick(rng, weights[p, s, o])
        kb = (weights * np.arange(1, weights.shape[-1] + 1)).sum(-1)[p, s, o]
        return rng.gamma(k.astype(float), mean / kb)

    arrival = clock.copy()
    stage = np.zeros(n, dtype=np.int64)
    highest = np.zeros(n, dtype=np.int64)
    way_out = _pick(rng, way[persona, 0])
    at_once = rng.random(n) < q[persona, 0]  # the interaction at arrival leaves with probability q
    deadline = clock + np.where(at_once, 0.0, stay(persona, stage, way_out))
    cols: dict[str, list] = {"cid": [], "time": [], "tp": [], "stage": [], "order": []}
    idx = np.arange(n)
    lv = at_once.copy()
    step = 0
    while idx.size:
        p, s, o, leaving = persona[idx], stage[idx], way_out[idx], lv[idx]
        t = np.empty(idx.size, dtype=np.int64)
        if leaving.any():
            t[leaving] = _pick(rng, q_exit[p[leaving], s[leaving], :, o[leaving]])
        if (~leaving).any():
            t[~leaving] = _pick(rng, q_stay[p[~leaving], s[~leaving]])
        dropped = leaving & (o == 0)
        moved = leaving & (o > 0)
        done = _log_step(model, rng, cols, idx, step, p, s, t, moved, dropped, np.where(moved, o - 1, s), stage,
                         clock, arrival, reach_days, highest, 0.0, 0.0)
        entered = idx[moved & ~done]
        if entered.size:
            way_out[entered] = _pick(rng, way[persona[entered], stage[entered]])
            deadline[entered] = clock[entered] + stay(persona[entered], stage[entered], way_out[entered])
        idx = idx[~done]
        if idx.size:
            nxt = clock[idx] + rng.exponential(1.0, idx.size) / np.maximum(stay_rate[persona[idx], stage[idx]], 1e-300)
            lv[idx] = nxt >= deadline[idx]
            clock[idx] = np.minimum(nxt, deadline[idx])
        step += 1
    return cols, highest


def with_customer_refusals(events: pd.DataFrame, seed: int = 0, *, clash: bool = False) -> pd.DataFrame:
    """A log that several per-customer checks refuse, spread over many buckets: rows repeated (the copies
    later in the file than some originals, earlier than others) and, with ``clash``, a customer whose
    persona changes late in the file. Every reader must report the refusal the whole log gives."""
    rng = np.random.default_rng(seed)
    n = len(events)
    picked = np.sort(rng.choice(np.arange(n // 3, n), size=12, replace=False))
    copies = events.iloc[picked]
    # half the copies go near the start, half at the end: the first pair in the file is not the first
    # customer's, nor the first bucket's
    out = pd.concat([events.iloc[:50], copies.iloc[::2], events.iloc[50:], copies.iloc[1::2]], ignore_index=True)
    if clash:
        i = len(out) - 3
        personas = sorted(set(out["persona"]))
        out.loc[i, "persona"] = next(p for p in personas if p != out.loc[i, "persona"])
    return out


def dropped_only_names(persona: bool = True) -> dict[str, list[str]]:
    """A log's columns whose "DRAFT" rows alone name the touchpoint "fax" (and, with ``persona``, the
    persona "ghost"): a [filter] keeping "DONE" drops them, so no model of it names either."""
    n = 4_000
    dropped = [i % 97 == 5 for i in range(n)]
    columns = {
        "customer_id": [f"c{i % 301}" for i in range(n)],
        "timestamp": [f"2024-0{1 + i // 1000}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z" for i in range(n)],
        "touchpoint": ["fax" if d else ["web", "email", "call"][i % 3] for i, d in enumerate(dropped)],
        "stage": [["awareness", "consideration"][i % 2] for i in range(n)],
        "persona": ["ghost" if d else ["a", "b"][i % 301 % 2] for i, d in enumerate(dropped)],
        "status": ["DRAFT" if d else "DONE" for d in dropped]}
    if not persona:
        del columns["persona"]
    return columns
