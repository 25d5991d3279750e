"""Calibration: event log in, Model out (pure; `journey calibrate` writes it: application/calibrate.py)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from calibration.assignments import Assignments
from calibration.estimate import DEFAULT_INACTIVITY_DAYS, check_options, estimate_stats, stats_of
from calibration.eventlog import EventLog
from calibration.experience import satisfaction_section
from calibration.load import load_events, refusal_order
from calibration.mapping import load_mapping
from calibration.sources import is_url
from calibration.stats import LogStats, Sweep, in_bucket_order, swept_stats
from calibration.value import section_of
from sim.errors import InputError
from sim.limits import finite, sha256_of_files
from sim.model import Model

READERS = ("stream", "memory")
T = TypeVar("T")


@dataclass
class Calibration:
    """A calibrated model and, when asked for, each customer's posterior per discovered persona."""

    model: Model
    assignments: Assignments | None = None

    @property
    def assignments_csv(self) -> str | None:
        """The assignments file's text (`Assignments.chunks` hands it out in pieces)."""
        return None if self.assignments is None else self.assignments.text()


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
    bounded however long the log (persona discovery too); ``memory`` loads it whole first. A Dask
    ``client`` sums the buckets on its workers (calibration/cluster.py). Every path gives the same model.
    ``progress(what, done, total)`` hears of long reads."""
    finite(inactivity_days, "--inactivity-days")  # nan and inf pass Typer's float parsing
    if reader not in READERS:
        raise InputError("unknown reader", where="--reader", value=reader, hint="use stream or memory")
    if client is None and is_url(events) and reader == "memory":
        raise InputError("a URL is read in batches (or on a cluster), not whole", file=events, where="--reader",
                         hint="copy the files here for --reader memory")
    if assignments is not None:
        _check_assignments(assignments, events, personas)
    mix = None  # the persona mixture's module (scipy's sparse matrices), only when asked for
    if personas is not None:
        from calibration import personas as mix
    k = None if mix is None else mix.parse_personas(personas)
    dwell_model = check_options(inactivity_days=inactivity_days, censoring=censoring, dwell=dwell,
                                touch_order=touch_order)
    phases = dwell_model == "phases"
    if k is not None:
        mix.check_header_has_no_personas(events, mapping)  # before the log is read (11 s at 49.8 M events)
    load = {"stages": stages, "conversion_stage": conversion_stage, "mapping": mapping, "before": before}
    find = None  # persona discovery's options (calibration/discovery.py)
    if k is not None:
        find = {"personas": personas, "seed": mix.DEFAULT_SEED if seed is None else seed,
                "inactivity_days": inactivity_days, "censoring": censoring}
    log = posterior = record = ids = first = found = None
    files: list[Path] = []  # the log's files, hashed during the estimate (the streaming reader's)
    if reader == "memory":
        if client is None and Path(events).is_dir():
            raise InputError("a folder is read in batches, not whole", file=events,
                             where="--reader", hint="drop --reader memory")
        log = load_events(events, **load)
        if find is not None:
            from calibration.discovery import discover

            log, posterior, record = discover(log, progress=progress, **find)
            ids, first = log.customer_ids, mix.first_rows(log)
        st = stats_of(log, inactivity_days=inactivity_days, phases=phases)
    elif client is not None:
        from calibration.cluster import ClusterLog

        with ClusterLog(events, client, progress=progress, hold=find is not None, **load) as on_cluster:
            st, found = _swept(on_cluster.sweep, on_cluster.end, on_cluster.notes, on_cluster.source,
                               inactivity_days=inactivity_days, phases=phases, find=find,
                               posterior=assignments is not None, progress=progress)
        st.source, st.sha256 = on_cluster.source, on_cluster.sha256
    else:
        st, files, found = _streamed(events, load, inactivity_days=inactivity_days, phases=phases,
                                     progress=progress, find=find, posterior=assignments is not None)
    if found is not None:
        posterior, record, ids, first = found.posterior, found.record, found.customer_ids, found.first_rows
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the streamed log's hash on the core the estimate leaves idle (reading keeps both busy)
        digest = pool.submit(sha256_of_files, files) if files else None
        model = estimate_stats(st, inactivity_days=inactivity_days, censoring=censoring, dwell=dwell,
                               touch_order=touch_order)
        if digest is not None:
            st.sha256 = model.log_summary["sha256"] = digest.result()
    if st.experience is not None:
        model.extras["experience"] = satisfaction_section(st.experience, st.stages, st.touchpoints)
    per_customer = None
    if record is not None:
        record["profiles"] = mix.profiles(model)
        model.extras["personas_discovered"] = record
        if assignments is not None:
            per_customer = Assignments(ids, posterior, model.personas, first)
    if currency is None and mapping is not None:
        currency = load_mapping(mapping).currency
    section = section_of(st.value, st.personas, st.stages, currency)
    if section:
        model.extras["value"] = section
    return Calibration(model=model, assignments=per_customer)


def _streamed(events: str | Path, load: dict, *, inactivity_days: float, phases: bool,
              progress: Callable[[str, int, int], None] | None, find: dict | None = None, posterior: bool = False
              ) -> tuple[LogStats, list[Path], Any]:
    """The log's statistics, read in batches and summed bucket by bucket (calibration/stream.py), the
    files read, not yet hashed (``sha256`` ""), and the personas found (None without ``find``: discovery's
    options; calibration/discovery.py, as `discover` finds them on a log in memory)."""
    from calibration.stream import open_stream

    def reading(done: int, total: int) -> None:  # the stream reports the bytes of its one pass
        progress("reading", done, total)

    with open_stream(events, progress=None if progress is None else reading, hash_log=False, **load) as stream:
        buckets = stream.bucket_ids()

        def each_part(compute: Callable[[int, EventLog, Any], T], what: str, given: dict[int, Any] | None
                      ) -> Iterator[T]:
            """The stream's sweep (calibration/stats.py's ``Sweep``): ``compute(bucket, part, given)`` of
            every bucket, in bucket order; a per-customer refusal is the log's first, raised once every
            bucket has been read."""
            def one(bucket: int) -> T | InputError:
                try:
                    part = stream.part(bucket)
                except InputError as err:
                    return err
                return compute(bucket, part, None if given is None else given[bucket])

            refused = []
            for i, got in enumerate(in_bucket_order(one, buckets)):
                if isinstance(got, InputError):
                    refused.append(got)
                elif not refused:
                    yield got
                if progress is not None:
                    progress(what, i + 1, len(buckets))
            if refused:
                raise min(refused, key=refusal_order)  # buckets in order: ties go to the first

        st, found = _swept(each_part, stream.end, stream.notes, stream.source, inactivity_days=inactivity_days,
                           phases=phases, find=find, posterior=posterior, progress=progress)
    st.source, st.sha256 = stream.source, ""
    return st, stream.files, found


def _swept(sweep: Sweep, provisional_end: float, notes: dict, source: str, *, inactivity_days: float,
           phases: bool, find: dict | None, posterior: bool, progress: Callable[[str, int, int], None] | None = None
           ) -> tuple[LogStats, Any]:
    """The statistics summed over a reader's sweep of its buckets, with the personas discovered first
    when ``find`` gives discovery's options (calibration/discovery.py); and those personas (or None)."""
    given = fill = found = None
    if find is not None:
        from calibration.discovery import discover_buckets, with_personas
        from calibration.personas import check_no_personas

        check_no_personas(notes, source)
        found = discover_buckets(sweep, provisional_end, posterior=posterior, progress=progress, **find)
        given, fill = found.per_bucket(), partial(with_personas, names=found.names)
    st = swept_stats(sweep, provisional_end, inactivity_days=inactivity_days, phases=phases, given=given, fill=fill)
    return st, found


def _check_assignments(path: str | Path, events: str | Path, personas: str | int | None) -> None:
    if personas is None:
        raise InputError("needs --personas (there are no discovered personas to assign)", where="--assignments",
                         value=str(path), hint="add --personas auto")
    if Path(path).exists() and Path(events).exists() and Path(path).resolve() == Path(events).resolve():
        raise InputError("is the event log itself: it would be overwritten", file=path, where="--assignments",
                         hint="give another file name")
