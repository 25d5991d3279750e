"""`journey optimize`: feasible spends, determinism, resume, workers, interruption, PostgreSQL, and the
issue's 'done when' check on a world the other tests never use."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pgserver import PostgresUnavailable, temporary_postgres
from reference_optimizer import reference_optimum
from typer.testing import CliRunner

from cli import app
from conftest import ROOT
from sim.exact import evaluate
from sim.model import Model
from sim.optimize import Objective, SpendSpace, fingerprint, parse_storage
from sim.scenario import Budget, Investment, Scenario, apply, load_scenario

runner = CliRunner()
BUDGET_TOML = ROOT / "scenarios" / "examples" / "budget.toml"
BEST_KEYS = {"allocation", "spend", "expected_conversion_rate", "baseline_expected_conversion_rate",
             "expected_uplift", "trials", "study", "storage", "conversion_rate", "conversion_rate_ci",
             "investments", "seed"}
WORLD_SEED = 6007  # used by no other test: the 'done when' world


def invoke(*args):
    return runner.invoke(app, ["optimize", *[str(a) for a in args]])


def ok(*args) -> dict:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "best.json").read_text())


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


def journal_study(path: Path, name: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


# ---- the search space: every trial feasible ---------------------------------------------------
@st.composite
def investments_and_budget(draw):
    n = draw(st.integers(1, 6))
    invs = []
    for i in range(n):
        lo = draw(st.sampled_from([0.0, 0.0, 1.5, 10.0]))
        hi = lo + draw(st.floats(0.0, 500.0))
        fixed = draw(st.booleans()) and draw(st.booleans())
        spend = draw(st.floats(lo, hi)) if fixed else None
        invs.append(Investment(name=f"i{i}", touchpoint="checkout", lever="drop_off", max_effect=0.5,
                               half_saturation=20.0, min_spend=lo, max_spend=hi, spend=spend))
    floor = sum(inv.spend if inv.spend is not None else inv.min_spend for inv in invs)
    total = floor + draw(st.floats(0.0, 2000.0))
    return invs, total


@settings(max_examples=1000, deadline=None)
@given(investments_and_budget(), st.data())
def test_every_parameter_maps_to_a_split_within_bounds_and_budget(case, data):
    invs, total = case
    sc = Scenario(model="m.json", investment=invs, budget=Budget(total=total))
    if all(inv.spend is not None or inv.max_spend == inv.min_spend for inv in invs):
        return  # nothing to optimise: SpendSpace refuses (tested below)
    space = SpendSpace.from_scenario(sc)
    raw = [data.draw(st.floats(*space.param_range(i))) for i in range(len(space.names))]
    spends = space.spends(raw)
    alloc = space.allocation(spends)
    assert list(alloc) == [inv.name for inv in invs]
    for inv in invs:
        s = alloc[inv.name]
        if inv.spend is not None:
            assert s == inv.spend
        assert inv.min_spend <= s <= inv.max_spend
    assert sum(alloc.values()) <= total + 1e-9
    # the split is a valid plan: written as fixed spends it passes the scenario's own validation
    Scenario(model="m.json", budget=Budget(total=total),
             investment=[inv.model_copy(update={"spend": alloc[inv.name]}) for inv in invs])
    # parameters at the top of every range ask for everything: the budget (or all the levers take) is spent
    full = space.allocation(space.spends([space.param_range(i)[1] for i in range(len(space.names))]))
    reachable = min(total, space.floor + float((space.hi - space.lo).sum()))
    assert sum(full.values()) >= reachable - (len(space.names) + 1) * space.quantum - 1e-9


def test_space_refuses_what_it_cannot_optimise():
    from sim.errors import InputError

    inv = Investment(name="a", touchpoint="checkout", lever="drop_off", max_effect=0.5, half_saturation=20.0,
                     max_spend=10.0)
    with pytest.raises(InputError, match="no \\[budget\\]"):
        SpendSpace.from_scenario(Scenario(model="m.json", investment=[inv]))
    with pytest.raises(InputError, match="no \\[\\[investment\\]\\]"):
        SpendSpace.from_scenario(Scenario(model="m.json", budget=Budget(total=5.0)))
    with pytest.raises(InputError, match="nothing to optimise"):
        SpendSpace.from_scenario(Scenario(model="m.json", budget=Budget(total=50.0),
                                          investment=[inv.model_copy(update={"spend": 5.0})]))


def test_storage_urls():
    run = Path("runs/x")
    assert parse_storage(None, run).label == "study.log"
    assert parse_storage(None, run).file == run / "study.log"
    assert parse_storage("sqlite:///study.db", run).kind == "rdb"
    assert parse_storage("here.db", run).target == "sqlite:///here.db"
    assert parse_storage("here.jsonl", run).kind == "journal"
    pg = parse_storage("postgresql://me:secret@db.example/opt", run)
    assert pg.kind == "rdb" and "secret" not in pg.label and pg.target.startswith("postgresql")


# ---- the command: outputs, determinism, resume -------------------------------------------------
def test_same_seed_same_best_json_and_a_resume_counts_the_whole_study(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = (BUDGET_TOML, "--trials", 30, "--seed", 4, "--customers", 2000)
    best = ok(*args, "--out", a)
    ok(*args, "--out", b)
    assert (a / "best.json").read_bytes() == (b / "best.json").read_bytes()
    assert BEST_KEYS <= set(best)
    assert best["trials"] == 30 and best["storage"] == "study.log" and best["study"] == "q3 budget"
    for name in ("best.toml", "trials.csv", "study.log", "history.png", "allocation.png", "response_curves.png"):
        assert (a / name).is_file(), name
    # best.toml is the plan: its own scenario gives exactly the reported expected conversion
    plan = load_scenario(a / "best.toml")
    assert all(inv.spend is not None for inv in plan.investment)
    assert evaluate(apply(Model.load(plan.model_path), plan)).conversion_rate == pytest.approx(
        best["expected_conversion_rate"], abs=1e-9)
    assert sum(best["allocation"].values()) <= 150.0 + 1e-9
    lo, hi = best["conversion_rate_ci"]
    assert lo <= best["conversion_rate"] <= hi
    before = rows(a)
    assert len(before) == 30 and {r["state"] for r in before} == {"COMPLETE"}
    # the study lives in the run directory: the same --out resumes it, --trials counts the whole study
    again = ok(BUDGET_TOML, "--trials", 45, "--seed", 4, "--customers", 2000, "--out", a)
    after = rows(a)
    assert again["trials"] == 45 and len(after) == 45 and after[:30] == before
    assert json.loads((a / "manifest.json").read_text())["optimize"]["trials_this_run"] == 15
    assert again["expected_conversion_rate"] >= best["expected_conversion_rate"]
    # a study made for another budget is not resumed
    changed = tmp_path / "changed.toml"
    changed.write_text(BUDGET_TOML.read_text().replace("total = 150.0", "total = 120.0")
                       .replace('"../demo/model.json"', json.dumps(str(BUDGET_TOML.parent.parent / "demo/model.json"))))
    result = invoke(changed, "--trials", 50, "--out", a)
    assert result.exit_code == 2 and "another scenario, budget or model" in result.output
    assert journal_study(a / "study.log", "q3 budget").user_attrs  # still there, untouched
    assert len(rows(a)) == 45
    # a later run into the same folder with another storage keeps the folder's study
    ok(BUDGET_TOML, "--trials", 5, "--customers", 1000, "--storage", tmp_path / "elsewhere.log", "--out", a)
    assert len(journal_study(a / "study.log", "q3 budget").trials) == 45


def test_pareto_front_rises_with_the_budget_and_ends_at_the_best_split(tmp_path):
    best = ok(BUDGET_TOML, "--trials", 20, "--seed", 2, "--customers", 1000, "--pareto", "--out", tmp_path / "p")
    front = best["pareto"]
    assert len(front) == 11 and (tmp_path / "p" / "pareto.png").is_file()
    budgets = [p["budget"] for p in front]
    values = [p["expected_conversion_rate"] for p in front]
    assert budgets[0] == 0.0 and budgets[-1] == 150.0 and budgets == sorted(budgets)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] == best["expected_conversion_rate"]
    assert values[0] == best["baseline_expected_conversion_rate"]
    for p in front:
        assert sum(p["allocation"].values()) <= p["budget"] + 1e-9
    assert values[5] > values[0]  # half the budget already buys something


def test_two_workers_share_one_study_exactly(tmp_path):
    best = ok(BUDGET_TOML, "--trials", 40, "--seed", 1, "--customers", 1000, "--workers", 2, "--out", tmp_path / "w")
    assert best["trials"] == 40
    study = journal_study(tmp_path / "w" / "study.log", "q3 budget")
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 40}


def test_ctrl_c_loses_no_completed_trial_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli", "optimize", str(BUDGET_TOML), "--trials", "100000", "--seed", "1",
           "--customers", "1000", "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "study.log"
    deadline = time.monotonic() + 60
    while (not log.is_file() or log.read_text().count('"op_code":6') < 25) and time.monotonic() < deadline:
        time.sleep(0.1)  # op 6 = a trial's state set: wait for some finished trials
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    states = Counter(t.state.name for t in journal_study(log, "q3 budget").trials)
    assert set(states) == {"COMPLETE"} and states["COMPLETE"] >= 20  # nothing left running or failed
    n = states["COMPLETE"]
    best = ok(BUDGET_TOML, "--trials", n + 3, "--seed", 1, "--customers", 1000, "--out", out)
    assert best["trials"] == n + 3


# ---- done when: a world never seen, calibrated from its log; 120 trials, then a resumed 80 -------
WORLD_TOML = """name = "world budget"
model = "model.json"

[[investment]]
name = "checkout_fix"
touchpoint = "checkout"
stage = "consideration"
lever = "drop_off"
max_effect = 0.6
half_saturation = 40.0
max_spend = 150.0

[[investment]]
name = "chat_staff"
touchpoint = "sales_chat"
lever = "advance"
max_effect = 0.5
half_saturation = 60.0
max_spend = 150.0

[[investment]]
name = "email_program"
touchpoint = "email"
lever = "exposure"
max_effect = 1.0
half_saturation = 30.0
max_spend = 100.0

[[investment]]
name = "support_training"
touchpoint = "support"
lever = "drop_off"
max_effect = 0.4
half_saturation = 25.0
min_spend = 5.0
max_spend = 100.0

[budget]
total = 150.0
"""


def test_done_when_resumed_study_captures_the_true_optimum_uplift(tmp_path):
    from calibration.calibrate import calibrate
    from worlds import make_world, simulate_log

    truth = make_world(WORLD_SEED)
    simulate_log(truth, 40_000, seed=WORLD_SEED + 1).events.to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "model.json").write_text(calibrate(tmp_path / "events.csv").to_json())
    (tmp_path / "s.toml").write_text(WORLD_TOML)
    storage = tmp_path / "study.log"
    common = ("--seed", 7, "--customers", 2000, "--storage", storage, "--study", "world")
    first = ok(tmp_path / "s.toml", "--trials", 120, *common, "--out", tmp_path / "r1")
    best = ok(tmp_path / "s.toml", "--trials", 200, *common, "--out", tmp_path / "r2")
    assert first["trials"] == 120 and best["trials"] == 200
    assert len(rows(tmp_path / "r2")) == 200

    sc = load_scenario(tmp_path / "s.toml")
    space = SpendSpace.from_scenario(sc)
    chosen = {k: v for k, v in best["allocation"].items() if k in space.names}
    true_obj = Objective(truth, sc)
    true_opt, _ = reference_optimum(true_obj, space, starts=3)
    captured = (true_obj(chosen) - true_obj.baseline) / (true_opt - true_obj.baseline)
    assert captured >= 0.96, captured
    # and the search itself: within 1 % of the best uplift on the model it optimised
    fitted = Objective(Model.load(tmp_path / "model.json"), sc)
    fit_opt, _ = reference_optimum(fitted, space, starts=3, extra_starts=[chosen])
    regret = 1 - (best["expected_conversion_rate"] - fitted.baseline) / (fit_opt - fitted.baseline)
    assert regret <= 0.01, regret


def test_fingerprint_follows_the_objective():
    sc = load_scenario(BUDGET_TOML)
    other = sc.model_copy(update={"budget": Budget(total=100.0)})
    assert fingerprint(sc, "abc") == fingerprint(sc.model_copy(update={"customers": 5}), "abc")
    assert fingerprint(sc, "abc") != fingerprint(other, "abc")
    assert fingerprint(sc, "abc") != fingerprint(sc, "abd")


# ---- PostgreSQL: a real server, two workers at the same moment on a fresh database -------------
@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free local port; stopped and removed afterwards."""
    server = temporary_postgres("journey")
    try:
        url = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.mark.postgres
def test_workers_on_postgresql(postgres_url, tmp_path):
    import optuna

    def start(k: int, trials: int, workers: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "cli", "optimize", str(BUDGET_TOML), "--trials", str(trials), "--seed", str(k),
               "--customers", "1000", "--storage", postgres_url, "--study", "shared", "--workers", str(workers),
               "--out", str(tmp_path / f"run{k}"), "-q"]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # two processes at the same moment on a fresh database: tables and study created once, no errors
    procs = [start(1, 20, 1), start(2, 20, 1)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    storage = optuna.storages.RDBStorage(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    states = Counter(t.state.name for t in optuna.load_study(study_name="shared", storage=storage).trials)
    assert set(states) == {"COMPLETE"} and 20 <= states["COMPLETE"] <= 21  # at most one overshoot across processes
    # --workers 2 in one run: the study reaches the requested count exactly
    p = start(3, 40, 2)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=storage)
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 40}
    best = json.loads((tmp_path / "run3" / "best.json").read_text())
    assert best["trials"] == 40 and best["storage"] == postgres_url and best["study"] == "shared"
    assert best["expected_conversion_rate"] == pytest.approx(study.best_value, abs=1e-9)
    storage.engine.dispose()


def test_reference_optimum_beats_every_trial(tmp_path):
    """SLSQP is the yardstick of the benchmark: no trial of a study may beat it."""
    sc = load_scenario(BUDGET_TOML)
    space = SpendSpace.from_scenario(sc)
    obj = Objective(Model.load(sc.model_path), sc)
    value, spends = reference_optimum(obj, space, starts=2)
    assert sum(spends.values()) <= 150.0 + 1e-6
    rng = np.random.default_rng(0)
    for _ in range(50):
        raw = [rng.uniform(*space.param_range(i)) for i in range(len(space.names))]
        assert obj(space.spends(raw)) <= value + 1e-12


def test_a_journal_cut_mid_line_resumes_from_its_complete_trials(tmp_path):
    """A power loss while a trial was written: resume keeps the complete trials, drops the torn line,
    keeps a copy of the original and says so; later runs into the same folder work as usual."""
    out = tmp_path / "opt"
    args = ["optimize", str(BUDGET_TOML), "--seed", "1", "--draws", "0", "--out", str(out), "-q"]
    assert runner.invoke(app, [*args, "--trials", "6"]).exit_code == 0
    journal = out / "study.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-15])
    res = runner.invoke(app, [*args, "--trials", "9"])
    assert res.exit_code == 0, res.output
    assert "last line was cut" in res.output
    assert (out / "study.log.torn").read_bytes() == whole[:-15]
    best = json.loads((out / "best.json").read_text())
    assert best["trials"] == 9 and "last line was cut" in best["notes"][0]
    again = runner.invoke(app, [*args, "--trials", "10"])
    assert again.exit_code == 0, again.output
    assert "last line was cut" not in again.output


@pytest.mark.parametrize("url, words", [("postgresql://u@localhost:99999/db", "Port out of range"),
                                        ("postgresql://u@[::1/db", "Invalid IPv6 URL"),
                                        ("postgresql://u@localhost:abc/db", "Port could not be cast")])
def test_a_database_url_that_cannot_be_read_is_one_line(tmp_path, url, words):
    res = runner.invoke(app, ["optimize", str(BUDGET_TOML), "--trials", "2", "--storage", url, "--study", "x",
                              "--draws", "0", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--storage" in lines[0] and words in lines[0]
    assert not (tmp_path / "o").exists()


def test_a_lock_left_by_a_killed_process_does_not_stall_the_resume(tmp_path):
    import os
    import time

    out = tmp_path / "opt"
    args = ["optimize", str(BUDGET_TOML), "--seed", "1", "--draws", "0", "--out", str(out), "-q"]
    assert runner.invoke(app, [*args, "--trials", "4"]).exit_code == 0
    lock = out / "study.log.lock"
    os.symlink(out / "study.log", lock)  # as a kill -9 mid-write leaves it
    old = time.time() - 60
    os.utime(lock, (old, old), follow_symlinks=False)
    started = time.monotonic()
    res = runner.invoke(app, [*args, "--trials", "6"])
    assert res.exit_code == 0, res.output
    assert time.monotonic() - started < 20  # not Optuna's 30 s grace period
    assert "lock left by a process" in res.output and not lock.exists()
