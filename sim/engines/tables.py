"""Draw tables the engines share, computed once per model: one owner for each table.

``way_out_tables``: a customer entering a stage is bound for one way out ``o`` (0 drop-off, 1 + u
moved to u), which sets how soon it leaves: interactions at rate ``lam = rate * (1 - q) + mu[o]``,
each the leaving one with probability ``mu[o] / lam`` (the SimPy engine and the simulated event log).
With phase-type stays ``mu[o]`` is the phase rate and such an event ends phase j: the stay (and the
event is the leaving interaction) with probability ``phase_exit[j]``, else silently the next phase.
``sequence_tables``: with touch sequences, the touchpoint first (from the last one), then its outcome
(the walking engine and the SimPy engine).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.exact import next_touchpoint, touchpoint_split
from sim.model import Model
from sim.phases import exit_probs


def cumulative(w: np.ndarray) -> np.ndarray:
    """Cumulative probabilities along the last axis, 1.0 from the last positive weight on.

    So a uniform below 1 never lands on a weight-0 tail entry through rounding (all-zero rows: 0).
    """
    c = np.cumsum(w, axis=-1)
    c = c / np.where(c[..., -1:] > 0, c[..., -1:], 1.0)
    on = w > 0
    c[np.cumsum(on, axis=-1) == on.sum(axis=-1, keepdims=True)] = 1.0
    return c


@dataclass(frozen=True)
class WayOutTables:
    """Per persona x stage (x way out) tables of a stay bound for one way out."""

    q: np.ndarray  # [P, S] P(an interaction leaves the stage)
    gap_mean: np.ndarray  # [P, S, 1 + S] mean days between interactions, bound for way out o
    leave_p: np.ndarray  # [P, S, 1 + S] P(an interaction is the leaving one), bound for o
    way_cum: np.ndarray  # [P, S, 1 + S] cumulative way-out probabilities
    stay_cum: np.ndarray  # [P, S, T] cumulative touchpoints of a staying interaction
    exit_cum: np.ndarray  # [P, S, 1 + S, T] cumulative touchpoints of the interaction leaving by o
    phase_exit: np.ndarray  # [P, S, 1 + S, K] P(the stay ends | a phase j ends): 1 for exponential stays


def way_out_tables(model: Model) -> WayOutTables:
    """The way-out tables of ``model``."""
    q, way = model.way_out()
    mu = model.phase_rates()  # phase-type stays: a phase ends at this rate (the leave rate if exponential)
    lam = (model.rate * (1.0 - q))[..., None] + mu  # [P, S, 1 + S]
    live = lam > 0  # the final stage has no interactions
    q_stay, q_exit = touchpoint_split(model)
    return WayOutTables(q=q, gap_mean=np.where(live, 1.0 / np.where(live, lam, 1.0), 0.0),
                        leave_p=np.where(live, mu / np.where(live, lam, 1.0), 0.0),
                        way_cum=cumulative(way), stay_cum=cumulative(q_stay),
                        exit_cum=cumulative(np.moveaxis(q_exit, 3, 2)),
                        phase_exit=np.ones(mu.shape + (1,)) if model.phases is None else exit_probs(model.phases))


@dataclass(frozen=True)
class SequenceTables:
    """Cumulative tables of a journey with touch sequences (``Model.follow``)."""

    entry_cum: np.ndarray  # [P, S, T] the first touchpoint in a stage
    next_cum: np.ndarray  # [P, S, T, T] the next touchpoint after the last one
    next_total: np.ndarray  # [P, S, T] the speed of the next interaction after the last touchpoint
    outcome_cum: np.ndarray  # [P, S, T, 2 + S] drop, move to u, stay


def sequence_tables(model: Model) -> SequenceTables:
    """The touch-sequence tables of ``model``."""
    probs, total = next_touchpoint(model)
    outcome = np.concatenate([model.drop[..., None], model.advance, model.stay[..., None]], -1)  # 0, 1+u, 1+S
    return SequenceTables(entry_cum=cumulative(model.share), next_cum=cumulative(probs), next_total=total,
                          outcome_cum=cumulative(outcome))
