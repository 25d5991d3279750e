"""Estimation: EventLog in, Model out (pure; keeps the counts behind every estimate).

Censoring. A row that moved the customer on, or was followed by another row of the customer, has
a known outcome however recent it is; only a customer's last non-advancing row (drop-off, or a stay
whose return is still to come) and an unanswered move into a stage (lapse, or a return still to
come) are uncertain.
  * ``censoring="cure"`` (default): every row enters the likelihood. Known rows count as they are,
    with their gaps; an uncertain row counts as a drop-off (lapse) with P(journey over | quiet time)
    = d / (d + stay * exp(-rate * quiet)) (l / (l + (1 - l) * exp(-rate * quiet))), the rest as a
    stay whose quiet time is censored time at risk for the rate (a cure model, solved by EM; the
    weights of "over" and "still going" are exactly the likelihood's, so nothing is biased and no
    row is dropped). ``inactivity_days`` does not enter the estimates: forcing rows quiet longer
    than it to "over" would bring back the bias the cure model removes (slow journeys written
    off); it only sets the log summary's ended / in-progress counts.
  * ``censoring="window"``: rows in the last ``inactivity_days`` of the log are left out of the
    outcome, lapse and gap estimates, whatever their outcome (no selection bias), and an earlier
    quiet row counts as a drop-off (the contract's inactivity rule, as it is). Their customers
    still count as customers, and their touchpoints toward the shares.
Where the data cannot tell, an estimate is the pooled prior: ``estimator.fallbacks`` lists each
such place in plain words; where nothing can be estimated, an InputError says so.

Sparse cells are pooled: each persona × stage × touchpoint estimate is a Dirichlet (beta) posterior
mean shrunk toward the all-persona estimate of the same stage and touchpoint, which is shrunk
toward the stage's average, with a prior weight of ``pooling`` pseudo-interactions.

The steps: calibration/counting.py (rows and counts), cure.py (the cure model's EM), pooling.py,
sequences.py, dwell.py (way-out dwell), fallbacks.py; this module assembles the Model.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from calibration.buckets import BUCKETS, LogSplit
from calibration.counting import Counts, count_rows
from calibration.cure import OutcomeFit, drop_weight, fit_outcomes, lapse_weight
from calibration.dwell import DwellFit, DwellInputs, fit_dwell
from calibration.eventlog import EventLog
from calibration.fallbacks import all_rows_note, fallbacks, touch_order_note
from calibration.phases import merge_bins
from calibration.pooling import pool_shares
from calibration.sequences import touch_dependence, touch_sequences
from calibration.stats import LogStats, summed_stats
from sim.errors import InputError
from sim.model import Model

DEFAULT_INACTIVITY_DAYS = 30.0
DEFAULT_POOLING = 10.0
SPARSE_BELOW = 30
CENSORING = ("cure", "window")
DWELL = ("way_out", "plain", "phases")
DEFAULT_DWELL = "phases"  # way_out and plain: the simpler choices (docs/backtest.md, "Phase-type stays")


def estimate(log: EventLog, *, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
             pooling: float = DEFAULT_POOLING, censoring: str = "cure", dwell: str | None = None,
             touch_order: int = 0) -> Model:
    """The journey model of an event log (see the module docstring); ``touch_order=1``: the next
    touchpoint depends on the last one in the stage (touch sequences, one time to leave per stage).
    ``dwell``: phases, way_out or plain (None: phases, or plain with touch sequences).

    The log is summed bucket by bucket (calibration/buckets.py, calibration/stats.py), as the
    streaming and cluster paths sum it, so every path gives the same model."""
    dwell = check_options(inactivity_days=inactivity_days, pooling=pooling, censoring=censoring, dwell=dwell,
                           touch_order=touch_order)
    return estimate_stats(stats_of(log, inactivity_days=inactivity_days, phases=dwell == "phases"),
                          inactivity_days=inactivity_days, pooling=pooling, censoring=censoring, dwell=dwell,
                          touch_order=touch_order)


def stats_of(log: EventLog, *, inactivity_days: float, phases: bool, buckets: int = BUCKETS) -> LogStats:
    """The statistics of a whole in-memory log, bucket by bucket (``buckets``: another split, for tests)."""
    # at log.end as given: a loaded log's is its true end, and a backtest's fit ends at the split
    total, _ = summed_stats(LogSplit(log, buckets).sweep, log.end, inactivity_days=inactivity_days, phases=phases)
    st = total.result()
    st.backward_rows = log.backward_rows
    return st


def estimate_stats(st: LogStats, *, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
                   pooling: float = DEFAULT_POOLING, censoring: str = "cure", dwell: str | None = None,
                   touch_order: int = 0) -> Model:
    """The journey model of a log's statistics (`estimate` of the log they sum)."""
    dwell = check_options(inactivity_days=inactivity_days, pooling=pooling, censoring=censoring, dwell=dwell,
                           touch_order=touch_order)
    if dwell == "phases" and st.move_bins is None:
        raise ValueError("phase-type stays need statistics taken with phases=True")
    if st.inactivity_days != inactivity_days:
        raise ValueError("the statistics were taken with another inactivity_days")
    m = float(pooling)
    c = count_rows(st, censoring)
    fit = fit_outcomes(st, c, m, censoring)
    notes = fallbacks(st, c, fit, censoring=censoring, inactivity_days=inactivity_days)
    if censoring == "cure":  # the dwell fit reweighs the customers' last rows itself: free the EM's copies
        fit.release_rows()
    if c.all_rows:
        notes.insert(0, all_rows_note(st, c, inactivity_days))

    # ---- pooled estimates -------------------------------------------------------------
    share = pool_shares(c.interactions.astype(float), m)
    seq_share, seq_follow, sequence_counts = touch_sequences(share, st.first_in_stage, st.pairs, m)
    dependence = touch_dependence(share, sequence_counts["followed"])
    follow = None
    if touch_order == 1:
        share, follow = seq_share, seq_follow
    else:
        sequence_counts = {}
        note = touch_order_note(dependence)
        if note is not None:
            notes.append(note)
    fit.lapse[:, 0] = 0.0
    fit.lapse[:, -1] = 0.0
    advance, drop, rate = fit.advance, fit.drop, fit.rate
    phases = None
    if dwell in ("way_out", "phases"):
        refit = _fit_dwell(st, fit, share, m, censoring=censoring, phases=dwell == "phases")
        advance, drop, rate, speed, dwell_counts = refit.advance, refit.drop, refit.rate, refit.leave_speed, \
            refit.counts()
        phases = refit.phases
        if phases is not None:
            notes.extend(_sparse_shape_notes(st.stages, refit.sparse or []))
    else:
        P, S, _ = st.shape
        speed, dwell_counts = np.ones((P, S, 1 + S)), {}

    customers = st.persona_customers
    arrivals, arrival_days = _arrivals(st.arrival, st.end)
    model = Model(
        stages=list(st.stages), touchpoints=list(st.touchpoints), personas=list(st.personas),
        conversion_stage=st.conversion_stage, persona_share=customers / customers.sum(),
        share=share, advance=advance, drop=drop, lapse=fit.lapse, rate=rate, leave_speed=speed, follow=follow,
        phases=phases,
        arrival_days=arrival_days,
        counts={
            "interactions": c.interactions, "decided": c.decided, "advanced": c.advanced, "dropped": fit.dropped,
            "stayed": fit.stayed, "entered": c.entered, "lapsed": fit.lapsed, "gaps": c.gaps,
            "days_at_risk": fit.days, "customers": customers, "uncertain": fit.uncertain,
            "uncertain_lapse": fit.uncertain_lapse, **sequence_counts, **dwell_counts,
        },
        estimator=_estimator(censoring=censoring, all_rows=c.all_rows, inactivity_days=inactivity_days, m=m,
                             touch_order=touch_order, dependence=dependence, dwell=dwell, notes=notes),
        log_summary=_log_summary(st, c, inactivity_days),
        arrivals=arrivals,
    )
    if phases is not None:  # readable: the phase count chosen per stage and way out
        model.estimator["dwell_phases"] = {_way_name(st.stages, key): k for key, k in (refit.chosen or {}).items()}
    model.check()
    return model


def dwell_used(model: Model) -> str:
    """The dwell model a calibrated model was fitted with (phases, way_out or plain), from its estimator."""
    return str(model.estimator.get("dwell", "way_out")).split(":")[0]


def _way_name(stages: list[str], key: str) -> str:
    """"stage -> way out" of a fit's "s/o" key."""
    s, o = (int(x) for x in key.split("/"))
    return f"{stages[s]} -> {'drop_off' if o == 0 else stages[o - 1]}"


def _sparse_shape_notes(stages: list[str], sparse: list[str]) -> list[dict[str, Any]]:
    """Fallback records: ways out with too few timed exits for a phase-type stay (kept exponential)."""
    if not sparse:
        return []
    names = [_way_name(stages, key) for key in sparse]
    return [{"kind": "dwell_shape", "ways": names,
             "message": f"{', '.join(names)}: fewer than 30 timed exits in the log, so the time in stage "
                        "keeps the exponential shape of --dwell way_out"}]


def check_options(*, inactivity_days: float, pooling: float = DEFAULT_POOLING, censoring: str = "cure",
                  dwell: str | None = None, touch_order: int = 0) -> str:
    """Refuse unknown options; returns the dwell model (touch sequences keep one time to leave)."""
    if dwell is None:
        dwell = "plain" if touch_order == 1 else DEFAULT_DWELL
    if touch_order not in (0, 1):
        raise InputError("must be 0 or 1", where="--touch-order", value=touch_order,
                         hint="1: the next touchpoint depends on the last one; 0: drawn afresh each time")
    if dwell not in DWELL:
        raise InputError("unknown dwell model", where="--dwell", value=dwell, hint="use way_out, phases or plain")
    if touch_order == 1 and dwell == "phases":
        raise InputError("touch sequences keep one exponential time to leave per stage", where="--dwell",
                         value=dwell, hint="use --dwell plain with --touch-order 1")
    if touch_order == 1:
        dwell = "plain"  # leave speeds assume touchpoints drawn afresh; sequences keep one time to leave
    if censoring not in CENSORING:
        raise InputError("unknown censoring method", where="--censoring", value=censoring, hint="use cure or window")
    if inactivity_days < 0:
        raise InputError("must not be negative", where="--inactivity-days", value=inactivity_days)
    if pooling < 0:
        raise InputError("must not be negative", where="pooling", value=pooling)
    return dwell


def _fit_dwell(st: LogStats, fit: OutcomeFit, share: np.ndarray, m: float, *, censoring: str,
               phases: bool = False) -> DwellFit:
    """The way-out dwell fit, visits cut at the outcome window (window) or followed to the log's end (cure)."""
    t = st.tails
    final = len(st.stages) - 1
    if censoring == "cure":
        # visits are followed to the log's end, so recent arrivals count too: a quiet last row
        # is a drop-off with the cure model's P(over | quiet so far) at the final estimates
        cut, early = st.end, slice(0, 2)
        q_rows = np.flatnonzero(t.live & ~t.advanced)
        q_w = drop_weight(fit.drop, fit.advance, fit.rate, t.cell[q_rows], t.to_idx[q_rows], st.end - t.time[q_rows],
                          t.certain[q_rows])
        l_rows = np.flatnonzero(t.live & t.advanced & (t.after < final))
        l_w = lapse_weight(fit.lapse, fit.rate, t.to_idx[l_rows], st.end - t.time[l_rows], t.certain[l_rows])
        late_ps, late_entry = st.late.ps[:0], st.late.entry_time[:0]
    else:  # moves in the window are censored at its start
        cut, early = st.end - st.inactivity_days, slice(0, 1)
        q_rows, q_w, l_rows, l_w = fit.quiet.drop, fit.w_drop, fit.quiet.lapse, fit.w_lapse
        late_ps, late_entry = st.late.ps, st.late.entry_time
    open_rows = np.flatnonzero(t.live & ~t.advanced & (t.time > cut))
    bins = merge_bins(st.move_bins[early]) if phases else None
    return fit_dwell(DwellInputs(
        move_exits=st.move_exits[early].sum(0), move_timed=st.move_timed[early].sum(0),
        move_days=st.move_days[early].sum(0), move_bins=bins, late_ps=late_ps, late_t=cut - late_entry,
        open_ps=t.ps[open_rows], open_t=cut - t.entry_time[open_rows], drop_ps=t.ps[q_rows],
        drop_t=t.time[q_rows] - t.entry_time[q_rows], drop_cut=cut - t.entry_time[q_rows],
        drop_timed=t.timed[q_rows], w_drop=q_w, lapse_idx=t.to_idx[l_rows], lapse_cut=cut - t.time[l_rows],
        w_lapse=l_w, share=share, advance=fit.advance, drop=fit.drop, lapse=fit.lapse, rate=fit.rate, m=m),
        phases=phases)


def _arrivals(start: np.ndarray, end: float) -> tuple[dict[str, Any], float]:
    """The model's arrivals record and the days they span.

    ``per_week``: arrivals per week from the first arrival. ``daily``: arrivals per UTC calendar day
    from the first arrival's day up to the log's end (the day holding the end is partial and left out),
    so that `journey forecast` can fit level, trend and weekly / yearly seasonality (sim/arrivals.py).
    """
    span = float(start.max() - start.min())
    arrival_days = max(span, 1.0)
    weeks = np.floor((start - start.min()) / 7.0).astype(np.int64)
    first_day = int(np.floor(start.min()))
    n_days = max(int(np.floor(end)) - first_day, 0)
    day = np.floor(start).astype(np.int64) - first_day
    daily = np.bincount(day[day < n_days], minlength=n_days)[:n_days]
    return ({"first": _iso(float(start.min())), "last": _iso(float(start.max())),
             "days": arrival_days, "per_week": np.bincount(weeks).tolist(),
             "daily": {"first_day": _iso(float(first_day))[:10], "counts": daily.tolist()}}, arrival_days)


def _log_summary(st: LogStats, c: Counts, inactivity_days: float) -> dict[str, Any]:
    """The model's log summary: source, size, and how many journeys completed, ended or go on."""
    t = st.tails
    final = len(st.stages) - 1
    completed = int((t.after == final).sum())
    # quiet long enough, or closed by a mapping's end_values however recent
    quiet = (t.time <= st.end - inactivity_days) | t.certain
    ended = int(((t.after < final) & quiet).sum())
    return {
        "source": st.source, "sha256": st.sha256, "rows": st.rows, "customers": st.customers,
        "first_timestamp": _iso(st.first_time), "last_timestamp": _iso(st.end),
        "backward_rows": st.backward_rows, "rows_after_final_stage": int(st.rows - st.live_rows),
        "undecided_rows": int(st.live_rows - c.decided.sum()),
        "customers_completed": completed, "customers_ended": ended,
        "customers_in_progress": int(st.customers - completed - ended),
    }


def _estimator(*, censoring: str, all_rows: bool, inactivity_days: float, m: float, touch_order: int,
               dependence: dict[str, Any], dwell: str, notes: list[dict[str, Any]]) -> dict[str, Any]:
    """The model's estimator record: how each estimate was made, and the fallbacks."""
    return {
        "censoring": {"cure": "cure model", "window": "outcome-window"}[censoring],
        "censoring_note": (
            "every interaction enters (the outcome window would have left most undecided): one that "
            "moved the customer on or was followed by another has a known outcome; a customer's last "
            "one counts as a drop-off (or lapse) with P(journey over | quiet time) from the calibrated "
            "gaps (EM), the rest as a stay whose quiet time is time at risk"
            if all_rows else
            "interactions within inactivity_days of the log's end have undecided outcomes and are "
            "excluded from outcome, lapse and gap estimates; a decided interaction never followed by "
            "another counts as a drop-off with P(journey over | quiet time) from the calibrated gaps "
            "(EM), the rest as a stay whose quiet time is time at risk"
            if censoring == "cure" else
            "interactions within inactivity_days of the log's end have undecided outcomes and are "
            "excluded from outcome, lapse and gap estimates; a decided interaction never followed by "
            "another counts as a drop-off"),
        "inactivity_days": float(inactivity_days),
        "outcome_rows": "all" if all_rows else "outcome window",
        "pooling": {"method": "hierarchical Dirichlet shrinkage: persona -> all personas -> stage average",
                    "prior_weight": m},
        "gaps": "exponential per persona x stage (Poisson interactions; touchpoint rate = rate x share)",
        "lapse": "P(no further interaction | just moved into the stage)",
        "touch_order": int(touch_order),
        "touch_dependence": dependence,
        "touch_sequences": ("the first interaction in a stage meets a touchpoint by share (from first "
                            "interactions there); after a staying one the next is drawn from its row of "
                            "next_touchpoint (consecutive interactions in the stage), shrunk toward the "
                            "stage's shares with prior_weight pseudo-interactions; one time to leave per stage"
                            if touch_order == 1 else "none: every interaction's touchpoint is drawn by share"),
        "dwell": _DWELL_TEXT[dwell],
        "sparse_below": SPARSE_BELOW,
        "fallbacks": notes,
    }


_DWELL_TEXT = {
    "way_out": "way_out: way-out probabilities and a leave rate per way out fitted together by EM for "
               "exponential times in stage, visits followed to the log's end (cure model) or to the "
               "outcome window (window); shrunk toward the plain model with prior_weight pseudo-visits",
    "phases": "phases: as way_out, with each persona x stage x way out's time in stage a phase-type "
              "(a mixture of Erlangs with one phase rate, dwell_shape in the journey): phases per stage "
              "and way out chosen by BIC on all personas (times divided by each persona's mean), each "
              "persona's shape shrunk toward it and its mean toward the plain model with prior_weight "
              "pseudo-visits; EM under the same censoring, quiet last interactions' P(over) recomputed "
              "with the fitted shapes",
    "plain": "plain: one time to leave per stage (leave_speed 1)",
}


def _iso(days: float) -> str:
    """Days since 1970 as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(days * 86400.0, tz=UTC).isoformat().replace("+00:00", "Z")
