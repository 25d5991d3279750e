"""The `journey` command line: parses arguments, calls one library function per verb, maps errors.

Exit status: 0 success; 2 bad input or usage (one line on stderr); 1 internal error.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

# journey's matrices are small (a few dozen states): BLAS threads only cost, up to 25x on a busy
# machine. Set before numpy loads; a user's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from sim.defaults import DEFAULT_DRAWS  # noqa: E402
from sim.errors import InputError, JourneyError  # noqa: E402

app = typer.Typer(
    name="journey",
    help="Simulate customer journeys calibrated from event logs and test what-if changes.\n\n"
         "Start with `journey demo`, then `journey calibrate EVENTS.csv --out model.json` and "
         "`journey simulate model.json`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from sim import __version__

        typer.echo(f"journey {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks of internal errors.")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    _state["debug"] = debug


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, taken as a Ctrl-C: the same clean-up (partial folders removed), exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def on_signal(signum: int, frame: object) -> None:
    """Raise Terminated: the signal unwinds like Ctrl-C."""
    raise Terminated(signum)


def catch_signals() -> None:
    """Let SIGTERM (kill, a scheduler) and SIGHUP (terminal closed) unwind like Ctrl-C.

    A signal someone set to be ignored (nohup) stays ignored.
    """
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, on_signal)


def interrupt_code(exc: KeyboardInterrupt) -> int:
    """The exit status of an interruption: 128 + signal, 130 for Ctrl-C."""
    return 128 + exc.signum if isinstance(exc, Terminated) else 130


def handled(fn):
    """Map library errors to exit codes: InputError -> 2, one line; anything else -> 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except InputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except JourneyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            typer.echo("interrupted: nothing was written", err=True)
            raise typer.Exit(interrupt_code(exc)) from None
        except Exception as exc:  # the CLI boundary: any other failure is an internal error, exit 1
            if _state["debug"]:
                traceback.print_exc()
            else:
                typer.echo(f"internal error: {exc.__class__.__name__}: {exc} (run with --debug for the trace)",
                           err=True)
            raise typer.Exit(1) from None

    return wrapper


# ---- shared option types ---------------------------------------------------------------------
def _path_arg(**kwargs):
    """A file argument: the library checks it (one line, exit 2), not click (three lines of usage)."""
    return typer.Argument(readable=False, **kwargs)


# spaces after the commas: the help's wrapper would split one long word mid-name
Stages = Annotated[str | None, typer.Option(help="Stage order, comma-separated (default: awareness, "
                                                 "consideration, decision, retention, advocacy).")]
ConvStage = Annotated[str | None, typer.Option("--conversion-stage",
                                               help="Stage that counts as converted (default decision).")]
Inactivity = Annotated[float, typer.Option("--inactivity-days",
                                           help="Interactions this recent wait for their outcome, and a journey "
                                                "quiet this long at the log's end ended (with the default cure "
                                                "model every interaction counts when the window would leave most "
                                                "of a short log undecided).")]
Censoring = Annotated[str, typer.Option(help="cure (default): a quiet journey counts as lost with the probability "
                                              "that it is over, from the calibrated gaps; window: quiet "
                                              "--inactivity-days = lost.")]
Dwell = Annotated[str | None, typer.Option(help="phases (default; plain with --touch-order 1): time to leave a "
                                                "stage depends on the way out (approvals may leave review sooner "
                                                "than cancellations) and each way's time in stage has a fitted "
                                                "phase-type shape (a week of dead time before any approval); "
                                                "way_out: the same with exponential times; plain: one time to "
                                                "leave per stage.")]
TouchOrder = Annotated[int, typer.Option("--touch-order", min=0, max=1,
                                          help="1: the next touchpoint depends on the last one in the stage "
                                               "(touch sequences, as first-order Markov attribution; one time to "
                                               "leave per stage); 0: drawn afresh by share each time.")]
MappingOpt = Annotated[Path | None, typer.Option(readable=False,
                                                 help="TOML file mapping a foreign log onto the contract's columns.")]
Customers = Annotated[int | None, typer.Option(help="Cohort size per replication "
                                                          "(default: the scenario's, else 100000).")]
Seed = Annotated[int | None, typer.Option(help="Random seed; the same seed gives identical JSON.")]
Replications = Annotated[int, typer.Option(help="Independent runs; the CI comes from their spread.")]
Jobs = Annotated[int, typer.Option(help="Parallel processes for replications (same results as 1).")]
Scheduler = Annotated[str | None, typer.Option(help="Run the replications on a Dask cluster: its scheduler's "
                                                    "address (tcp://host:8786), or local for one on this machine; "
                                                    "the same results as here (docs/cluster.md).")]
Workers = Annotated[int, typer.Option(min=1, max=256, help="Workers of --scheduler local.")]
Engine = Annotated[str, typer.Option(help="auto (simpy when the scenario has [capacity]), fast or simpy.")]
Out = Annotated[Path | None, typer.Option(help="Run directory (default results/<command>-<UTC time>/).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Draws = Annotated[int, typer.Option(min=0, help="Draws of the model's parameters given the data it was fitted "
                                                "on: intervals then include that uncertainty, not only "
                                                "simulation noise (0: simulation noise only).")]


@app.command(epilog="Examples: journey calibrate events.csv.gz --out model.json --inactivity-days 30\n\n"
                    "journey calibrate events.csv.gz --out model.json --personas auto --assignments personas.csv\n\n"
                    "journey calibrate s3://bucket/log/ --out model.json\n\n"
                    "journey calibrate exports/ --out model.json   (a folder of CSV or Parquet files)\n\n"
                    "journey calibrate s3://bucket/log/ --out model.json --scheduler tcp://host:8786 --personas auto")
@handled
def calibrate(
    events: Annotated[str, _path_arg(metavar="EVENTS", help="Event log: CSV, CSV.gz, Parquet, a folder of Parquet "
                                                            "files or of CSV files, or the URL of one of those "
                                                            "(s3://, gs://, file://: fsspec and its package for "
                                                            "the store; --scheduler reads Parquet).")],
    out: Annotated[Path, typer.Option(help="Model JSON to write.")],
    stages: Stages = None,
    conversion_stage: ConvStage = None,
    inactivity_days: Inactivity = 30.0,
    censoring: Censoring = "cure",
    dwell: Dwell = None,
    touch_order: TouchOrder = 0,
    mapping: MappingOpt = None,
    personas: Annotated[str | None, typer.Option(
        help="The log has no persona column: discover personas from behaviour, auto (K by BIC, 1 to 6) "
             "or a number K (a mixture of journey models fitted by EM).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of --personas' starts (default fixed: the same log "
                                                  "gives the same personas).")] = None,
    assignments: Annotated[Path | None, typer.Option(
        help="With --personas: write each customer's probability per persona here (CSV).")] = None,
    currency: Annotated[str | None, typer.Option(help="Currency of the log's value column, kept in the model "
                                                      "(e.g. EUR; a mapping's `currency` key says the same).")] = None,
    reader: Annotated[str, typer.Option(help="stream (default): read the log in batches and sum it by customer "
                                             "bucket, memory bounded however long the log; memory: load it whole "
                                             "first. Both give the same model.")] = "stream",
    scheduler: Annotated[str | None, typer.Option(help="Sum the buckets on a Dask cluster: its scheduler's address "
                                                       "(tcp://host:8786), or local for a cluster on this machine "
                                                       "(see docs/cluster.md).")] = None,
    workers: Workers = 2,
) -> None:
    """Estimate a journey model from an event log."""
    from application.calibrate import run_calibrate

    run_calibrate(events, out, stages=stages, conversion_stage=conversion_stage, inactivity_days=inactivity_days,
                  mapping=mapping, censoring=censoring, dwell=dwell, personas=personas, seed=seed,
                  assignments=assignments, currency=currency, touch_order=touch_order, reader=reader,
                  scheduler=scheduler, workers=workers, terminal=True)


@app.command(epilog="Examples: journey simulate model.json --customers 1000000 --seed 7\n\n"
                    "journey simulate scenarios/examples/checkout_fix.toml --replications 10 --jobs 2\n\n"
                    "journey simulate model.json --replications 40 --scheduler tcp://host:8786")
@handled
def simulate(
    target: Annotated[Path, _path_arg(metavar="MODEL_OR_SCENARIO", help="Model JSON or scenario TOML.")],
    customers: Customers = None,
    seed: Seed = None,
    replications: Replications = 1,
    engine: Engine = "auto",
    horizon_days: Annotated[float | None, typer.Option(help="Count reach within this many days "
                                                                      "of arrival.")] = None,
    jobs: Jobs = 1,
    events_out: Annotated[Path | None, typer.Option(help="Also write the simulated journeys as an event "
                                                         "log (Parquet).")] = None,
    draws: Draws = DEFAULT_DRAWS,
    out: Out = None,
    quiet: Quiet = False,
    scheduler: Scheduler = None,
    workers: Workers = 2,
) -> None:
    """Simulate customers through a calibrated journey."""
    from application.simulate import simulate_command

    simulate_command(target, customers=customers, seed=seed, replications=replications, engine=engine,
                     horizon_days=horizon_days, jobs=jobs, events_out=events_out, draws=draws, out=out, quiet=quiet,
                     scheduler=scheduler, workers=workers)


@app.command(epilog="Example: journey compare model.json scenarios/examples/checkout_fix.toml --out results/cmp")
@handled
def compare(
    base: Annotated[Path, _path_arg(metavar="BASE", help="Baseline: model JSON or scenario TOML.")],
    scenarios: Annotated[list[Path], _path_arg(metavar="SCENARIO...", help="Scenario TOML files.")],
    customers: Customers = None,
    seed: Seed = None,
    replications: Replications = 1,
    engine: Engine = "auto",
    jobs: Jobs = 1,
    draws: Draws = DEFAULT_DRAWS,
    out: Out = None,
    quiet: Quiet = False,
    scheduler: Scheduler = None,
    workers: Workers = 2,
) -> None:
    """Compare scenarios with a baseline using common random numbers."""
    from application.compare import compare_command

    compare_command(base, scenarios, customers=customers, seed=seed, replications=replications, engine=engine,
                    jobs=jobs, draws=draws, out=out, quiet=quiet, scheduler=scheduler, workers=workers)


@app.command(epilog="Example: journey hotspots model.json --top 10")
@handled
def hotspots(
    model: Annotated[Path, _path_arg(metavar="MODEL_OR_SCENARIO", help="Model JSON or scenario TOML.")],
    top: Annotated[int, typer.Option(help="How many points to show.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write the ranking as JSON here.")] = None,
    draws: Draws = DEFAULT_DRAWS,
    seed: Seed = None,
    by: Annotated[str, typer.Option(help="Rank by journeys lost, or by revenue lost (a model with values).")
                  ] = "journeys",
) -> None:
    """Rank the risk-of-leaving points: where customers are lost and what fixing them is worth."""
    from application.hotspots import hotspots_command

    hotspots_command(model, top=top, out=out, draws=draws, seed=seed, by=by)


@app.command(epilog="Example: journey optimize scenarios/examples/budget.toml --trials 200 --seed 1\n\n"
                    "Several machines, one study: journey optimize s.toml --storage "
                    "postgresql://user@host/db --study q3 --trials 400")
@handled
def optimize(
    scenario: Annotated[Path, _path_arg(metavar="SCENARIO",
                                             help="Scenario TOML with [[investment]] and [budget].")],
    trials: Annotated[int, typer.Option(help="Trials in the whole study (a resumed study counts "
                                                    "its earlier trials).")] = 100,
    seed: Seed = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (sqlite:///f.db, "
                                                     "postgresql://..., or a .log journal file).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name; an existing one is resumed.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes sharing the study.")] = 1,
    pareto: Annotated[bool, typer.Option(help="Also trace conversion against spend.")] = False,
    customers: Customers = None,
    draws: Draws = DEFAULT_DRAWS,
    objective: Annotated[str, typer.Option(help="What the search maximises: point (the calibrated model's "
                                                "conversion), mean (the average over the data's "
                                                "uncertainty, 40 draws) or qNN, e.g. q10 (the uplift "
                                                "reached in 90 % of the plausible models: cautious).")] = "point",
    out: Out = None,
    quiet: Quiet = False,
) -> None:
    """Search the split of a budget over investments that converts the most customers."""
    from application.optimize import run_optimize
    from application.terminal import render_best

    try:
        path, best = run_optimize(scenario, trials=trials, seed=seed, storage=storage, study=study, workers=workers,
                                  pareto=pareto, customers=customers, out=out, quiet=quiet, draws=draws,
                                  objective=objective)
    except KeyboardInterrupt as exc:
        typer.echo("interrupted: the study keeps every completed trial; run the same command again to resume",
                   err=True)
        raise typer.Exit(interrupt_code(exc)) from None
    render_best(best)
    typer.echo(f"-> {path / 'best.json'}")


@app.command(epilog="Example: journey backtest events.csv --split 2024-05-01 --out results/bt")
@handled
def backtest(
    events: Annotated[str, _path_arg(metavar="EVENTS", help="Event log: CSV, CSV.gz or Parquet (a local file).")],
    split: Annotated[str, typer.Option(help="Fit on rows before this ISO 8601 date, e.g. 2024-05-01 "
                                            "(midnight UTC); predict the customers who start after it.")],
    stages: Stages = None,
    conversion_stage: ConvStage = None,
    inactivity_days: Inactivity = 30.0,
    censoring: Censoring = "cure",
    dwell: Dwell = None,
    touch_order: TouchOrder = 0,
    mapping: MappingOpt = None,
    draws: Annotated[int, typer.Option(min=0, help="Draws of the fitted model's parameters, each paired with a "
                                                   "draw of the arrivals: the weekly predictions' 95 % intervals "
                                                   "(0: none).")] = DEFAULT_DRAWS,
    seed: Annotated[int | None, typer.Option(help="Seed of the intervals' draws (default fixed: the same log and "
                                                  "split give identical JSON).")] = None,
    out: Out = None,
) -> None:
    """Fit on the early cohort, predict the later one, compare with what earlier customers did."""
    from application.backtest import run_backtest

    run_backtest(events, split=split, stages=stages, conversion_stage=conversion_stage,
                 inactivity_days=inactivity_days, mapping=mapping, out=out, censoring=censoring, dwell=dwell,
                 touch_order=touch_order, draws=draws, seed=seed, terminal=True)


@app.command(epilog="Example: journey forecast model.json scenarios/examples/checkout_fix.toml --start 2024-07-01 "
                    "--weeks 12 --rollout 2024-07-15 --ramp-weeks 2 --seed 1 --out results/fc")
@handled
def forecast(
    targets: Annotated[list[Path], _path_arg(metavar="MODEL_OR_SCENARIO...",
                                             help="The baseline (a model JSON, or a scenario's model) and "
                                                  "scenario TOML files.")],
    start: Annotated[str, typer.Option(help="First day of the first week, an ISO 8601 date (midnight UTC).")],
    weeks: Annotated[int, typer.Option(help="How many weeks to project.")],
    rollout: Annotated[str | None, typer.Option(help="Day the scenarios' changes apply from (default the "
                                                     "start); customers in progress carry over.")] = None,
    ramp_weeks: Annotated[int, typer.Option("--ramp-weeks", help="Weeks over which the share of customers under "
                                                                 "the change rises linearly to 1 (0: all at "
                                                                 "once).")] = 0,
    arrivals_per_week: Annotated[float | None, typer.Option(
        "--arrivals-per-week", help="Arrivals a week instead of the log's fitted pattern (a scenario's "
                                    "arrivals_per_week wins for its customers).")] = None,
    draws: Annotated[int, typer.Option(min=0, help="Draws of the model's parameters, each paired with a draw of "
                                                   "the arrivals: the 95 % intervals (0: none).")] = DEFAULT_DRAWS,
    seed: Seed = None,
    out: Out = None,
) -> None:
    """Project weekly arrivals, conversions and revenue from a start date, base against scenarios."""
    from application.forecast import run_forecast

    run_forecast(targets, start=start, weeks=weeks, rollout=rollout, ramp_weeks=ramp_weeks,
                 arrivals_per_week=arrivals_per_week, draws=draws, seed=seed, out=out, terminal=True)


@app.command(epilog="Example: journey drift model-2024h1.json model-2024h2.json")
@handled
def drift(
    old: Annotated[Path, _path_arg(metavar="OLD_MODEL", help="Earlier model JSON.")],
    new: Annotated[Path, _path_arg(metavar="NEW_MODEL", help="Later model JSON.")],
    alpha: Annotated[float, typer.Option(help="Share of the flagged changes that may be chance (the false "
                                              "discovery rate).")] = 0.05,
    out: Out = None,
) -> None:
    """Which probabilities changed beyond noise between two calibrations."""
    from application.drift import run_drift

    run_drift(old, new, alpha=alpha, out=out, terminal=True)


@app.command(epilog="Example: journey report results/demo/simulate results/demo/compare --out report.html")
@handled
def report(
    dirs: Annotated[list[Path], _path_arg(metavar="DIR...", help="Run directories.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
) -> None:
    """One self-contained HTML page from simulate, compare, optimize and backtest runs."""
    from application.report import build_report

    path = build_report(dirs, out)
    typer.echo(f"report -> {path}")


@app.command(epilog="Example: journey demo --out results/demo")
@handled
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo's runs go.")] = Path("results/demo"),
    customers: Annotated[int, typer.Option(help="Cohort size of the demo's simulations.")] = 200_000,
    quiet: Quiet = False,
) -> None:
    """Run the whole pipeline on the bundled example."""
    from application.demo import demo_command

    demo_command(out, customers=customers, quiet=quiet)


class Command(typer.core.TyperCommand):
    """Typer's command with plain argument names: `BASE SCENARIO...`, not `{BASE} {SCENARIO...}...`
    in the usage line and `SCENARIO... <list[Path]>` in the help (each argument's help says what it is)."""

    @staticmethod
    def _arg_name(param: typer.core.TyperArgument) -> str:
        name = param.metavar or param.name.upper()
        return name if param.nargs == 1 or name.endswith("...") else f"{name}..."

    def collect_usage_pieces(self, ctx) -> list[str]:
        """The usage line's pieces, arguments by their plain names."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                name = self._arg_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        """The Arguments and Options sections of the help."""
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, typer.core.TyperArgument):
                args.append((self._arg_name(param), record[1]))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


for _info in app.registered_commands:  # every command, without touching each decorator
    if _info.cls in (None, typer.core.TyperCommand):
        _info.cls = Command


def main() -> None:
    """The `journey` entry point."""
    catch_signals()
    app(prog_name="journey")


if __name__ == "__main__":
    sys.exit(main())
