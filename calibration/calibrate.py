"""Calibration: event log in, Model out (pure; `journey calibrate` writes it: application/calibrate.py)."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.estimate import DEFAULT_INACTIVITY_DAYS, check_options, estimate_stats, stats_of
from calibration.experience import satisfaction_section
from calibration.load import load_events, refusal_order
from calibration.mapping import load_mapping
from calibration.sources import is_url
from calibration.stats import LogStats, StatsSum, at_log_end, in_bucket_order, log_stats
from calibration.value import section_of
from sim.errors import InputError
from sim.limits import finite, sha256_of_files
from sim.model import Model

READERS = ("stream", "memory")


@dataclass
class Calibration:
    """A calibrated model and, when asked for, each customer's posterior per discovered persona (CSV text)."""

    model: Model
    assignments_csv: str | None = None


def calibrate(events: str | Path, *, stages: str | None = None, conversion_stage: str | None = None,
              inactivity_days: float = DEFAULT_INACTIVITY_DAYS, mapping: str | Path | None = None,
              before: float | None = None, censoring: str = "cure", dwell: str | None = None,
              personas: str | int | None = None, seed: int | None = None, currency: str | None = None,
              touch_order: int = 0, reader: str = "stream") -> Model:
    """The model of an event log (see `calibration`)."""
    return calibration(events, stages=stages, conversion_stage=conversion_stage, inactivity_days=inactivity_days,
                       mapping=mapping, before=before, censoring=censoring, dwell=dwell, personas=personas,
                       seed=seed, currency=currency, touch_order=touch_order, reader=reader).model


def calibration(events: str | Path, *, stages: str | None = None, conversion_stage: str | None = None,
                inactivity_days: float = DEFAULT_INACTIVITY_DAYS, mapping: str | Path | None = None,
                before: float | None = None, censoring: str = "cure", dwell: str | None = None,
                personas: str | int | None = None, seed: int | None = None,
                assignments: str | Path | None = None, currency: str | None = None,
                touch_order: int = 0, reader: str = "stream", client=None,
                progress: Callable[[str, int, int], None] | None = None) -> Calibration:
    """``touch_order``: 1 = touch sequences (calibration/estimate.py);
    ``personas`` (auto or K): discover them from behaviour when the log has none (calibration/personas.py);
    ``assignments``: the file each customer's posterior per persona is meant for (checked here; its CSV
    text comes back in the record).

    ``reader``: ``stream`` (default) reads the log in batches and sums it bucket by bucket, so memory stays
    bounded however long the log; ``memory`` loads it whole first (persona discovery always does). A Dask
    ``client`` sums the buckets on its workers (calibration/cluster.py). Every path gives the same model.
    ``progress(what, done, total)`` hears of long reads."""
    finite(inactivity_days, "--inactivity-days")  # nan and inf pass Typer's float parsing
    if reader not in READERS:
        raise InputError("unknown reader", where="--reader", value=reader, hint="use stream or memory")
    if client is None and is_url(events) and (personas is not None or reader == "memory"):
        raise InputError("a URL is read in batches (or on a cluster), not whole", file=events,
                         where="--personas" if personas is not None else "--reader",
                         hint="copy the files here for " + ("persona discovery" if personas is not None
                                                            else "--reader memory"))
    if assignments is not None:
        _check_assignments(assignments, events, personas)
    discovery = None
    if personas is not None:  # the discovery module (scipy's sparse matrices) only when asked for
        from calibration import personas as discovery
    k = None if discovery is None else discovery.parse_personas(personas)
    dwell_model = check_options(inactivity_days=inactivity_days, censoring=censoring, dwell=dwell,
                                touch_order=touch_order)
    phases = dwell_model == "phases"
    load = {"stages": stages, "conversion_stage": conversion_stage, "mapping": mapping, "before": before}
    log = posterior = record = None
    files: list[Path] = []  # the log's files, hashed during the estimate (the streaming reader's)
    if k is not None or reader == "memory":
        if client is None and Path(events).is_dir():
            raise InputError("a folder of Parquet files is read in batches, not whole", file=events,
                             where="--personas" if k is not None else "--reader",
                             hint="drop --reader memory (persona discovery needs one file)")
        log = load_events(events, **load)
        if k is not None:
            seed = discovery.DEFAULT_SEED if seed is None else seed
            log, posterior, record = discovery.discover(log, personas=personas, seed=seed,
                                                        inactivity_days=inactivity_days, censoring=censoring)
        st = stats_of(log, inactivity_days=inactivity_days, phases=phases)
    elif client is not None:
        from calibration.cluster import cluster_stats

        st = cluster_stats(events, client, inactivity_days=inactivity_days, phases=phases, **load)
    else:
        st, files = _streamed(events, load, inactivity_days=inactivity_days, phases=phases, progress=progress)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the streamed log's hash on the core the estimate leaves idle (reading keeps both busy)
        digest = pool.submit(sha256_of_files, files) if files else None
        model = estimate_stats(st, inactivity_days=inactivity_days, censoring=censoring, dwell=dwell,
                               touch_order=touch_order)
        if digest is not None:
            st.sha256 = model.log_summary["sha256"] = digest.result()
    if st.experience is not None:
        model.extras["experience"] = satisfaction_section(st.experience, st.stages, st.touchpoints)
    csv = None
    if record is not None:
        record["profiles"] = discovery.profiles(model)
        model.extras["personas_discovered"] = record
        if assignments is not None:
            csv = discovery.assignments_csv(log, posterior, model.personas)
    if currency is None and mapping is not None:
        currency = load_mapping(mapping).currency
    section = section_of(st.value, st.personas, st.stages, currency)
    if section:
        model.extras["value"] = section
    return Calibration(model=model, assignments_csv=csv)


def _streamed(events: str | Path, load: dict, *, inactivity_days: float, phases: bool,
              progress: Callable[[str, int, int], None] | None) -> tuple[LogStats, list[Path]]:
    """The log's statistics, read in batches and summed bucket by bucket (calibration/stream.py), and the
    files read, not yet hashed (``sha256`` "")."""
    from calibration.stream import open_stream

    def reading(done: int, total: int) -> None:  # the stream reports the bytes of its one pass
        progress("reading", done, total)

    with open_stream(events, progress=None if progress is None else reading, hash_log=False, **load) as stream:
        buckets = stream.bucket_ids()

        def summed(end: float) -> tuple[StatsSum, float]:
            """The buckets' statistics at ``end``, and the largest part end (the log's true end)."""
            def bucket_stats(bucket: int) -> tuple[LogStats | InputError, float]:
                try:
                    part = stream.part(bucket)
                except InputError as err:  # a per-customer check: every bucket is read to find the log's first
                    return err, -np.inf
                return log_stats(part, end=end, inactivity_days=inactivity_days, phases=phases), part.end

            total, last, refused = StatsSum(), -np.inf, []
            for i, (part_stats, part_end) in enumerate(in_bucket_order(bucket_stats, buckets)):
                if isinstance(part_stats, InputError):
                    refused.append(part_stats)
                elif not refused:
                    total.add(part_stats)
                last = max(last, part_end)
                if progress is not None:
                    progress("summing", i + 1, len(buckets))
            if refused:
                raise min(refused, key=refusal_order)  # buckets in order: ties go to the first
            return total, last

        total, _ = at_log_end(summed, stream.end)
        st = total.result()
    st.source, st.sha256 = stream.source, ""
    return st, stream.files


def _check_assignments(path: str | Path, events: str | Path, personas: str | int | None) -> None:
    if personas is None:
        raise InputError("needs --personas (there are no discovered personas to assign)", where="--assignments",
                         value=str(path), hint="add --personas auto")
    if Path(path).exists() and Path(events).exists() and Path(path).resolve() == Path(events).resolve():
        raise InputError("is the event log itself: it would be overwritten", file=path, where="--assignments",
                         hint="give another file name")
