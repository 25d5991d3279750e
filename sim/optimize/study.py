"""Studies and trials: the seeded TPE sampler, a study created or resumed (race-safe), trials asked
and told with Ctrl-C deferred to the trial's end, K worker processes sharing one study, and `search`."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sim.errors import InputError, JourneyError
from sim.model import Model
from sim.optimize.objective import Objective, ObjectiveSpec, make_objective
from sim.optimize.space import SpendSpace
from sim.optimize.storage import StorageSpec, Store, creation_lock, open_storage
from sim.scenario import Scenario
from sim.simulate import Streams

FINGERPRINT_ATTR = "journey_fingerprint"
OBJECTIVE_ATTR = "journey_objective"  # said when a resume is refused for another objective


def make_sampler(streams: Streams, offset: int = 0, worker: int = 0) -> Any:
    """TPE seeded from (the run's seed, trials already in the study, worker): a resumed run draws new numbers."""
    import optuna

    return optuna.samplers.TPESampler(seed=streams.sampler_seed(offset, worker), multivariate=True,
                                      constant_liar=True)


def quiet_optuna() -> None:
    """Optuna says warnings only (no line per trial)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(storage: Any, spec: StorageSpec, name: str, fp: str, *, sampler: Any = None,
               space: SpendSpace | None = None, objective: str = "point") -> tuple[Any, bool]:
    """Create the study or load it (race-safe); (study, created). Checks that it fits this scenario."""
    import optuna
    from optuna.study import StudyDirection

    with creation_lock(spec):
        try:
            storage.create_new_study([StudyDirection.MAXIMIZE], name)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            created = False
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        if created:
            study.set_user_attr(FINGERPRINT_ATTR, fp)
            study.set_user_attr(OBJECTIVE_ATTR, objective)
            if space is not None:
                study.enqueue_trial(space.even_params())
    if len(study.directions) != 1 or study.direction != StudyDirection.MAXIMIZE:
        raise InputError("the study exists but does not maximise one value", where="--study", value=name,
                         hint="choose another --study name")
    have = study.user_attrs.get(FINGERPRINT_ATTR)
    if have is None:
        if study.get_trials(deepcopy=False):
            raise InputError("the study exists and was not made by journey optimize", where="--study",
                             value=name, hint="choose another --study name")
        study.set_user_attr(FINGERPRINT_ATTR, fp)  # its creator has not labelled it yet
    elif have != fp and study.user_attrs.get(OBJECTIVE_ATTR, "point") != objective:
        made = study.user_attrs.get(OBJECTIVE_ATTR, "point")
        raise InputError(f"the study in {spec.label} was made for another objective ({made})",
                         where="--study", value=name,
                         hint=f"resume it with the objective it was made for, or choose a new --study name "
                              f"(or another --out) to optimise {objective}")
    elif have != fp:
        raise InputError(f"the study in {spec.label} was made for another scenario, budget or model",
                         where="--study", value=name,
                         hint="choose a new --study name (or another --out) to start afresh")
    return study, created


def count_complete(study: Any) -> int:
    """The study's complete trials (any worker's, any machine's)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


# ---- trials and workers ------------------------------------------------------------------------
@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """A Ctrl-C during the block waits until the trial is committed (a second one interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


class Slots:
    """Trials this run may still start; shared by the worker processes of one run."""

    def __init__(self, n: int, shared: Any = None) -> None:
        self.value = shared  # a multiprocessing.Value, or None for a plain counter
        self.n = n

    def take(self) -> bool:
        """Take one slot; False when none is left."""
        if self.value is None:
            if self.n <= 0:
                return False
            self.n -= 1
            return True
        with self.value.get_lock():
            if self.value.value <= 0:
                return False
            self.value.value -= 1
            return True

    def give_back(self) -> None:
        """Return a slot taken but not used."""
        if self.value is None:
            self.n += 1
        else:
            with self.value.get_lock():
                self.value.value += 1


def run_trial(study: Any, space: SpendSpace, objective: Callable[[dict[str, float]], float],
              sync: Callable[[], None] | None = None) -> float:
    """One trial, ask to tell (then made durable); a failure is recorded as FAIL before it propagates."""
    from optuna.trial import TrialState

    with _sigint_deferred():
        trial = study.ask()
        try:
            spends = space.suggest(trial)
            value = float(objective(spends))
            trial.set_user_attr("spends", spends)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
        if sync is not None:
            sync()
    return value


def run_trials(study: Any, space: SpendSpace, objective: Callable[[dict[str, float]], float], *, target: int,
               slots: Slots, progress: Callable[[int], None] | None = None,
               sync: Callable[[], None] | None = None) -> int:
    """Trials until this run's slots are used or the study has ``target`` complete trials (any worker)."""
    done = 0
    while slots.take():
        if count_complete(study) >= target:
            slots.give_back()
            break
        run_trial(study, space, objective, sync)
        done += 1
        if progress is not None:
            progress(1)
    return done


@dataclass
class WorkerJob:
    """What a worker process needs to rebuild the study, the space and the objective."""

    model: Model
    scenario: Scenario
    spec: StorageSpec
    study: str
    fingerprint: str
    streams: Streams  # the run's (a RunContext: picklable)
    offset: int
    index: int
    target: int
    objective: str = "point"  # the --objective text: the worker rebuilds the objective from it
    draws: int = 0


def _add(shared: Any, amount: int) -> None:
    with shared.get_lock():
        shared.value += amount


def _worker(job: WorkerJob, counter: Any, errors: Any, done: Any) -> None:
    """Entry of a worker process: its own storage connection, its own sampler stream."""
    import warnings

    warnings.filterwarnings("ignore", module="optuna")
    try:
        quiet_optuna()
        store = open_storage(job.spec)
        space = SpendSpace.from_scenario(job.scenario)
        spec = ObjectiveSpec.parse(job.objective)
        study, _ = open_study(store.storage, job.spec, job.study, job.fingerprint,
                              sampler=make_sampler(job.streams, job.offset, job.index),
                              objective=spec.tag(job.draws, job.streams.seed))
        objective = make_objective(job.model, job.scenario, spec, job.draws, job.streams)
        try:
            run_trials(study, space, objective, target=job.target, slots=Slots(0, counter), sync=store.sync,
                       progress=functools.partial(_add, done))
        finally:
            store.close()
    except KeyboardInterrupt:
        sys.exit(130)
    except JourneyError as exc:
        errors.put(str(exc))
        sys.exit(2)


def _run_workers(jobs: list[WorkerJob], remaining: int, study: Any,
                 progress: Callable[[int], None] | None) -> int:
    """K worker processes on one study; Ctrl-C lets each finish its trial in flight. Returns the trials
    these workers completed (not other machines' on the same study)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no inherited connections, locks or threads
    counter = ctx.Value("l", remaining)
    errors = ctx.Queue()
    done = ctx.Value("l", 0)  # this run's completed trials: the bar and trials_this_run ignore other machines'
    procs = [ctx.Process(target=_worker, args=(job, counter, errors, done), name=f"journey-optimize-{job.index}")
             for job in jobs]
    seen = 0
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.25)
            if progress is not None:
                now = done.value
                if now > seen:
                    progress(now - seen)
                    seen = now
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        message = errors.get(timeout=1) if not errors.empty() else None
        if message is not None:
            raise InputError(f"worker failed: {message}")
        raise JourneyError(f"{len(failed)} of {len(procs)} workers failed (exit {failed[0].exitcode}); "
                           "the study keeps every completed trial: run the same command again to resume")
    return int(done.value)


@dataclass
class SearchResult:
    """The searched study, its open storage, and the trials this run completed."""

    study: Any
    store: Store
    ran: int  # trials this run completed
    complete_before: int


def search(model: Model, scenario: Scenario, space: SpendSpace, objective: Objective, *, spec: StorageSpec,
           study_name: str, fp: str, trials: int, streams: Streams, workers: int,
           progress_factory: Callable[[int], Any] | None = None, draws: int = 0) -> SearchResult:
    """Open (or create) the study and run trials until it holds ``trials`` complete ones."""
    store = open_storage(spec)
    try:
        study, _ = open_study(store.storage, spec, study_name, fp, space=space,
                              objective=objective.spec.tag(draws, streams.seed))
        before = count_complete(study)
        remaining = max(0, trials - before)
        workers = max(1, min(workers, remaining))
        bar = progress_factory(remaining) if progress_factory is not None and remaining else contextlib.nullcontext()
        ran = 0  # this run's own trials: other machines may complete some of the study's meanwhile
        with bar as advance:
            if remaining == 0:
                pass
            elif workers == 1:
                study.sampler = make_sampler(streams, before, 0)
                ran = run_trials(study, space, objective, target=trials, slots=Slots(remaining), progress=advance,
                                 sync=store.sync)
            else:
                jobs = [WorkerJob(model, scenario, spec, study_name, fp, streams, before, k, trials,
                                  objective=objective.spec.label, draws=draws) for k in range(workers)]
                ran = _run_workers(jobs, remaining, study, advance)
    except BaseException:
        store.close()
        raise
    return SearchResult(study=study, store=store, ran=ran, complete_before=before)
