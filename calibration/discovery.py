"""Persona discovery over a log's customer buckets (calibration/personas.py fits the mixture).

The same steps whether the buckets come from the streaming reader, a log in memory or a Dask cluster's
workers (calibration/cluster.py), so all three give the same personas, and memory stays bounded by the
fit's sample, not by the log:

1. every bucket once: the log's true end, its live rows and those in the outcome window (which rows
   have an outcome, `every_row_decided`), and its customers;
2. the features of a seeded sample of at most ``FIT_SAMPLE`` customers (everyone in a smaller log),
   bucket by bucket; K is searched on 25,000 of them and the chosen K fitted on the whole sample;
3. every bucket's features again: each customer's posterior under that fit, and its persona drawn from
   it with the bucket's own seeded generator (the same draws whatever order threads finish in).

The caller then computes the statistics with the drawn personas (`Discovery.per_bucket`, `with_personas`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from calibration import personas as mix
from calibration.counting import every_row_decided
from calibration.eventlog import EventLog
from calibration.stats import Sweep, at_log_end

FIT_SAMPLE = 1_000_000  # customers the mixture is fitted on at most (160 MB of features)


@dataclasses.dataclass
class Discovery:
    """Personas found for a log's customers, who are numbered in bucket order."""

    drawn: np.ndarray  # [C] each customer's persona, drawn from its posterior
    starts: dict[int, int]  # bucket -> its first customer's number
    names: list[str]
    record: dict[str, Any]  # for the model JSON (profiles added once the model is fitted)
    posterior: np.ndarray | None = None  # [C, K] in the personas' order, when asked for
    customer_ids: pa.Array | None = None  # with the posterior: the ids, and each one's first file row
    first_rows: np.ndarray | None = None

    def per_bucket(self) -> dict[int, np.ndarray]:
        """Each bucket's drawn personas: the ``given`` of the statistics' sweep (`with_personas`)."""
        bounds = [*self.starts.values(), self.drawn.size]
        return {b: self.drawn[lo:hi] for b, lo, hi in zip(self.starts, bounds[:-1], bounds[1:])}


def with_personas(part: EventLog, persona: np.ndarray, names: list[str]) -> EventLog:
    """A bucket's part with its customers' discovered personas (``persona``: theirs, in the part's order)."""
    return dataclasses.replace(part, persona_of_customer=persona, personas=names,
                               notes={**part.notes, "personas_discovered": True})


def discover_buckets(sweep: Sweep, provisional_end: float, *, personas: str | int = "auto",
                     seed: int = mix.DEFAULT_SEED, max_k: int = mix.MAX_K,
                     inactivity_days: float = mix.DEFAULT_INACTIVITY_DAYS, censoring: str = "cure",
                     posterior: bool = False, progress: Callable[[str, int, int], None] | None = None
                     ) -> Discovery:
    """Personas for a log without a persona column, from its buckets (see the module's steps).
    ``provisional_end``: the reader's end (the true one is the largest part end); ``posterior``: keep
    each customer's posterior, id and first row (for --assignments); ``progress``: the fit's (the sweeps
    report their own). Each sweep's ``compute`` holds
    scalars and the fit only, so it travels to a cluster's workers as it is."""
    fixed = mix.parse_personas(personas)

    def counted(end: float) -> tuple[tuple[int, int, dict[int, int]], float]:
        live = window = 0
        last, customers = -np.inf, {}
        for bucket, n, (lv, win), part_end in sweep(lambda b, part, _: (
                b, part.n_customers, mix.window_rows(part, end=end, inactivity_days=inactivity_days), part.end),
                "personas", None):
            live, window, last = live + lv, window + win, max(last, part_end)
            customers[bucket] = n
        return (live, window, customers), last

    (live, window, customers), end = at_log_end(counted, provisional_end)
    every_row = every_row_decided(live, window, censoring)
    starts = dict(zip(customers, np.cumsum([0, *customers.values()])[:-1].tolist(), strict=True))
    C = sum(customers.values())

    def features(part: EventLog) -> mix.Features:
        return mix.features(part, inactivity_days=inactivity_days, censoring=censoring, end=end, every_row=every_row)

    rng = np.random.default_rng([seed, 0])
    picks = None  # each bucket's sampled customers, numbered within the bucket
    if C > FIT_SAMPLE:
        sample = np.sort(rng.choice(C, FIT_SAMPLE, replace=False))
        bounds = np.searchsorted(sample, [*starts.values(), C])
        picks = {b: sample[lo:hi] - starts[b] for b, lo, hi in zip(starts, bounds[:-1], bounds[1:])}

    def sampled(bucket: int, part: EventLog, pick: np.ndarray | None) -> mix.Features:
        return features(part) if pick is None else mix.subset(features(part), pick)

    fit = mix.fit_personas(mix.stacked(list(sweep(sampled, "personas", picks))), personas=fixed, max_k=max_k,
                           seed=seed, rng=rng, customers=C, progress=progress)

    def assigned(bucket: int, part: EventLog, _) -> tuple[int, np.ndarray, int, tuple | None]:
        R = mix.posterior(features(part), fit)
        drawn = mix.draw(R, np.random.default_rng([seed, 1, bucket]))
        # ids as Arrow text: ~13 bytes a customer where a Python string takes ~60, here and in transit
        kept = (R, pa.array(part.customer_ids, pa.large_string()), mix.first_rows(part)) if posterior else None
        return bucket, drawn, int((R.max(1) > 0.9).sum()), kept

    drawn = np.empty(C, dtype=np.int32)
    kept: list[tuple[np.ndarray, pa.Array, np.ndarray]] = []
    confident = 0
    for bucket, got, sure, more in sweep(assigned, "personas", None):
        drawn[starts[bucket]:starts[bucket] + got.size] = got
        confident += sure
        if more is not None:
            kept.append(more)
    R = np.concatenate([k[0] for k in kept]) if posterior else None
    names, drawn, R = mix.name_by_size(fit, drawn, R, confident)
    return Discovery(drawn=drawn, starts=starts, names=names, record=fit.record, posterior=R,
                     customer_ids=pa.concat_arrays([k[1] for k in kept]) if posterior else None,
                     first_rows=np.concatenate([k[2] for k in kept]) if posterior else None)


def discover(log: EventLog, *, personas: str | int = "auto", seed: int = mix.DEFAULT_SEED, max_k: int = mix.MAX_K,
             inactivity_days: float = mix.DEFAULT_INACTIVITY_DAYS, censoring: str = "cure",
             progress: Callable[[str, int, int], None] | None = None) -> tuple[EventLog, np.ndarray, dict[str, Any]]:
    """Personas for a log in memory: (the log with them filled in, posterior [C, K] with columns in the
    personas' order, the record for the model JSON); its buckets as the streaming reader sees them."""
    from calibration.buckets import LogSplit

    mix.check_no_personas(log.notes, log.source)
    split = LogSplit(log)
    found = discover_buckets(split.sweep, log.end, personas=personas, seed=seed, max_k=max_k,
                             inactivity_days=inactivity_days, censoring=censoring, posterior=True,
                             progress=progress)
    order = split.customer_order  # the log's customer codes in bucket order
    persona = np.empty(log.n_customers, dtype=np.int32)
    persona[order] = found.drawn
    post = np.empty_like(found.posterior)
    post[order] = found.posterior
    filled = dataclasses.replace(log, persona_of_customer=persona, personas=found.names,
                                 notes={**log.notes, "personas_discovered": True})
    return filled, post, found.record
