"""Personas discovered from behaviour (--personas): known-truth worlds with the persona column removed."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from calibration.calibrate import calibrate, calibration
from cli import app
from sim.errors import InputError
from sim.exact import evaluate
from sim.model import Model
from worlds import make_world, simulate_log

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MIX = (0.5, 0.3, 0.2)


def distinct_world() -> Model:
    """Three personas whose journeys differ clearly: one drops off 2.5x as often, one meets other
    touchpoints, one meets other touchpoints again, interacts 3x as often and drops off half as often."""
    w = make_world(7)
    w.persona_share = np.array(MIX)
    w.drop[0] = np.minimum(w.drop[0] * 2.5, 0.6)
    w.share[1, :-1] = np.roll(w.share[1, :-1], 3, axis=-1)
    w.rate[2] *= 3.0
    w.share[2, :-1] = np.roll(w.share[2, :-1], 5, axis=-1)
    w.drop[2] *= 0.5
    w.check()
    return w


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    folder = tmp_path_factory.mktemp("personas")
    world = distinct_world()
    events = simulate_log(world, 20_000, seed=3, arrival_days=180.0).events
    labelled, plain = folder / "labelled.csv", folder / "events.csv"
    events.to_csv(labelled, index=False)
    events.drop(columns="persona").to_csv(plain, index=False)
    result = calibration(plain, personas="auto", assignments=folder / "assignments.csv")
    (folder / "assignments.csv").write_text(result.assignments_csv)
    found = result.model
    return {"world": world, "folder": folder, "labelled": labelled, "plain": plain, "found": found}


def test_three_personas_found_by_bic(three):
    rec = three["found"].extras["personas_discovered"]
    table = {r["k"]: r["bic"] for r in rec["table"]}
    print("K table:", rec["table"])
    assert rec["chosen_k"] == 3 and rec["criterion"].startswith("BIC")
    assert min(table, key=table.get) == 3 and max(table) >= 4  # K = 4 was tried and lost
    assert three["found"].personas == ["segment_1", "segment_2", "segment_3"]


def test_shares_and_conversion_per_persona_recovered(three):
    world, found = three["world"], three["found"]
    truth = evaluate(world).conversion_by_persona
    order = np.argsort(-world.persona_share)  # matched by share: segment_1 is the largest
    got_conv = evaluate(found).conversion_by_persona
    print("shares", found.persona_share, "truth", world.persona_share[order])
    print("conversion", got_conv, "truth", truth[order])
    assert np.all(np.diff(found.persona_share) <= 0)
    assert np.abs(found.persona_share - world.persona_share[order]).max() <= 0.05
    assert np.abs(got_conv - truth[order]).max() <= 0.03
    profiles = found.extras["personas_discovered"]["profiles"]
    assert [round(p["expected_conversion"], 4) for p in profiles.values()] == [round(float(c), 4) for c in got_conv]


def test_overall_conversion_as_the_labelled_fit(three):
    labelled = calibrate(three["labelled"])
    got, want = evaluate(three["found"]).conversion_rate, evaluate(labelled).conversion_rate
    print("overall conversion", got, "labelled fit", want)
    assert abs(got - want) <= 0.01


def test_one_persona_world_gives_one(tmp_path):
    world = make_world(4, personas=["only"])
    path = tmp_path / "events.csv"
    simulate_log(world, 8_000, seed=2, arrival_days=180.0).events.drop(columns="persona").to_csv(path, index=False)
    rec = calibrate(path, personas="auto").extras["personas_discovered"]
    print("K table:", rec["table"])
    assert rec["chosen_k"] == 1


def test_model_file_keeps_profiles_and_loads(three, tmp_path):
    out = tmp_path / "model.json"
    res = runner.invoke(app, ["calibrate", str(three["plain"]), "--out", str(out), "--personas", "auto"])
    assert res.exit_code == 0, res.output
    assert "K = 3 by BIC" in res.output and "segment_3:" in res.output
    data = json.loads(out.read_text())
    found = data["personas_discovered"]
    assert found["chosen_k"] == 3 and found["seed"] == 20 and len(found["table"]) >= 4
    prof = found["profiles"]["segment_1"]
    assert set(prof) >= {"share", "expected_conversion", "top_touchpoints", "mean_days_in_stage", "lost_most",
                         "description"}
    model = Model.load(out)
    assert model.extras["personas_discovered"]["chosen_k"] == 3
    # the same log and seed give the same personas
    assert found["table"] == three["found"].extras["personas_discovered"]["table"]
    assert data["personas"]["segment_1"]["customers"] == int(three["found"].counts["customers"][0])


def test_assignments_csv(three):
    rows = list(csv.DictReader((three["folder"] / "assignments.csv").open()))
    assert len(rows) == 20_000
    assert list(rows[0]) == ["customer_id", "segment_1", "segment_2", "segment_3", "chosen"]
    p = np.array([[float(r[f"segment_{k}"]) for k in (1, 2, 3)] for r in rows])
    assert np.allclose(p.sum(1), 1.0, atol=1e-5)
    chosen = np.array([int(r["chosen"].split("_")[1]) - 1 for r in rows])
    assert (chosen == p.argmax(1)).all()
    # the posteriors agree with the hidden truth for most customers (best matching of labels)
    truth = {f"c{i}": k for i, k in enumerate(simulate_log(three["world"], 20_000, seed=3).persona)}
    t = np.array([truth[r["customer_id"]] for r in rows])
    agree = max(np.mean(chosen == np.array(perm)[t]) for perm in
                ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]))
    assert agree > 0.75


def test_a_persona_column_wins(three, tmp_path):
    out = tmp_path / "model.json"
    res = runner.invoke(app, ["calibrate", str(three["labelled"]), "--out", str(out), "--personas", "auto"])
    assert res.exit_code == 2
    assert "already has personas" in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_persona_column_is_refused_before_the_rows_are_read(three, tmp_path):
    """The header (or a mapping's [persona] rule) is enough: every reader refuses at once, before a bad
    row late in the log, so the same first problem on each (it took a pass over the log, 11 s at 49.8 M
    events)."""
    events = pd.read_csv(three["labelled"], dtype=str)
    events.loc[len(events) - 1, "stage"] = "purchase"  # a bad row, last
    csv_log, folder = tmp_path / "late-bad.csv", tmp_path / "parts"
    events.to_csv(csv_log, index=False)
    folder.mkdir()
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), folder / "part-0.parquet")
    for log, reader in ((csv_log, "stream"), (csv_log, "memory"), (folder, "stream")):
        with pytest.raises(InputError, match="column 'persona': the log already has personas"):
            calibration(log, personas="auto", reader=reader)
    with pytest.raises(InputError, match="unknown stage"):
        calibration(csv_log)  # the row is bad indeed
    rule = tmp_path / "rule.toml"
    rule.write_text('[persona]\ncolumn = "channel"\n')
    with pytest.raises(InputError, match="column 'channel': the log already has personas"):
        calibration(three["plain"], personas="auto", mapping=rule)


@pytest.mark.parametrize("extra, fragment", [
    (["--personas", "0"], "at least 1"),
    (["--personas", "many"], "expected auto or a number"),
    (["--assignments", "{log}"], "needs --personas"),
    (["--personas", "auto", "--assignments", "{log}"], "is the event log itself"),
])
def test_bad_options_exit_2_nothing_written(three, tmp_path, extra, fragment):
    out = tmp_path / "model.json"
    before = three["plain"].read_bytes()
    args = [a.replace("{log}", str(three["plain"])) for a in extra]
    res = runner.invoke(app, ["calibrate", str(three["plain"]), "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert fragment in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists() and three["plain"].read_bytes() == before


def test_fixed_k_and_seed(three, tmp_path):
    a = calibrate(three["plain"], personas=2, seed=5).extras["personas_discovered"]
    assert a["chosen_k"] == 2 and [r["k"] for r in a["table"]] == [2] and a["seed"] == 5
    assert a["criterion"].startswith("fixed")


def test_downstream_commands_on_discovered_personas(three, tmp_path):
    model = tmp_path / "model.json"
    res = runner.invoke(app, ["calibrate", str(three["plain"]), "--out", str(model), "--personas", "auto"])
    assert res.exit_code == 0, res.output
    mix = tmp_path / "mix.toml"
    mix.write_text(f'name = "more segment_3"\nmodel = "{model}"\n[personas]\nsegment_1 = 0.2\nsegment_2 = 0.3\n'
                   'segment_3 = 0.5\n')
    only = tmp_path / "only.toml"
    only.write_text(f'name = "checkout for segment_1"\nmodel = "{model}"\n[[change]]\ntouchpoint = "checkout"\n'
                    'persona = "segment_1"\ndrop_off = 0.5\n')
    sim_dir, cmp_dir = tmp_path / "sim", tmp_path / "cmp"
    for args in (["simulate", model, "--customers", "20000", "--seed", "1", "--draws", "10", "--out", sim_dir, "-q"],
                 ["compare", model, mix, only, "--customers", "20000", "--seed", "1", "--draws", "10",
                  "--out", cmp_dir, "-q"],
                 ["hotspots", model, "--top", "5", "--draws", "10", "--seed", "1"],
                 ["report", sim_dir, cmp_dir, "--out", tmp_path / "report.html"]):
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, (args[0], res.output)
    comparison = json.loads((cmp_dir / "comparison.json").read_text())
    names = [sc["name"] for sc in comparison["scenarios"]]
    assert names == ["more segment_3", "checkout for segment_1"]
    html = (tmp_path / "report.html").read_text()
    assert "Personas discovered from behaviour" in html and "segment_3" in html


def _without_provenance(model: Model) -> dict:
    data = json.loads(model.to_json())
    data.pop("provenance", None)
    return data


def test_the_stream_finds_the_personas_the_whole_log_gives(three, tmp_path, monkeypatch):
    """The stream builds the features bucket by bucket, as `discover` does on the log in memory: the same
    model, record and assignments (in the file's order), K searched on every customer or on a sample,
    from one CSV, a folder of Parquet files or its URL (neither could be discovered on before)."""
    from calibration import personas

    monkeypatch.setattr(personas, "SEARCH_SAMPLE", 4_000)  # the sampled search, on a small log
    runs = {}
    for reader in ("stream", "memory"):
        res = calibration(three["plain"], personas="auto", reader=reader, assignments=tmp_path / "a.csv")
        runs[reader] = (_without_provenance(res.model), res.assignments_csv)
    assert runs["stream"][0] == runs["memory"][0] and runs["stream"][1] == runs["memory"][1]
    assert runs["stream"][0]["personas_discovered"]["customers_in_search"] == 4_000
    ids = [line.split(",")[0] for line in runs["stream"][1].splitlines()[1:]]
    first_seen = pd.read_csv(three["plain"], usecols=["customer_id"])["customer_id"].drop_duplicates()
    assert ids == first_seen.tolist()  # the file's order, whatever order the buckets met them in
    folder = tmp_path / "parts"
    folder.mkdir()
    table = pa.Table.from_pandas(pd.read_csv(three["plain"]), preserve_index=False)
    for i, start in enumerate(range(0, table.num_rows, table.num_rows // 3 + 1)):
        pq.write_table(table.slice(start, table.num_rows // 3 + 1), folder / f"part-{i}.parquet")
    got = _without_provenance(calibration(folder, personas="auto").model)
    want = dict(runs["stream"][0])
    fsspec = pytest.importorskip("fsspec")
    memory, root = fsspec.filesystem("memory"), "/journey-test-personas"
    try:  # an object store's URL (memory:// stands in), streamed here
        for f in sorted(folder.iterdir()):
            memory.pipe(f"{root}/parts/{f.name}", f.read_bytes())
        remote = _without_provenance(calibration(f"memory://{root}/parts/", personas="auto").model)
    finally:
        memory.rm(root, recursive=True)
    for d in (got, want, remote):
        d["log"] = {k: v for k, v in d["log"].items() if k not in ("source", "sha256")}
    assert got == want == remote


def test_long_steps_report_progress(three, monkeypatch):
    """Every step of a discovery shows progress: the sweeps, each K tried and each EM step of the chosen
    K's fit on the whole sample (before 0.5.5 the fit was silent, about 20 s at 49.8 M events)."""
    from calibration import personas

    monkeypatch.setattr(personas, "SEARCH_SAMPLE", 4_000)  # the chosen K is then refitted on everyone
    heard: dict[str, list[tuple[int, int]]] = {}
    calibration(three["plain"], personas="auto", progress=lambda what, done, total: heard.setdefault(
        what, []).append((done, total)))
    assert {"reading", "personas", "personas: choosing K", "personas: fitting the chosen K", "summing"} <= set(heard)
    search, fit = heard["personas: choosing K"], heard["personas: fitting the chosen K"]
    assert [d for d, _ in search[:-1]] == list(range(1, len(search))) and search[-1][0] == search[-1][1]
    steps = [d for d, _ in fit[:-1]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert fit[-1] == (personas.MAX_EM, personas.MAX_EM)  # converged: the bar completes


@pytest.mark.parametrize("censoring", ["cure", "window"])
def test_the_stream_finds_them_on_a_real_log_whose_end_moves(tmp_path, censoring):
    """BPI 2012 (its mapping without [persona]: end rows, a filter, duplicates dropped), with a row after
    a declined application's end as the file's last: the log's true end is known only once the buckets
    are built, and both readers find the same personas at it."""
    mapping = tmp_path / "map.toml"
    text = (ROOT / "scenarios" / "mappings" / "bpic2012_mapping.toml").read_text()
    mapping.write_text(re.sub(r"^\[persona\].*?(?=^\[)", "", text, flags=re.S | re.M))
    log = pd.read_csv(DATA / "bpic2012_slice.csv.gz", dtype=str)
    declined = log[log["concept:name"] == "A_DECLINED"].iloc[0].copy()
    declined["concept:name"], declined["time:timestamp"] = "W_Nabellen offertes", "2012-06-01T00:00:00.000+02:00"
    path = tmp_path / "bpi.csv"
    pd.concat([log, declined.to_frame().T]).to_csv(path, index=False)
    models = [_without_provenance(calibrate(path, mapping=mapping, personas="auto", censoring=censoring,
                                            reader=reader)) for reader in ("stream", "memory")]
    assert models[0] == models[1]
    assert models[0]["log"]["last_timestamp"] < "2012-06"  # the row after the end row is not the log's end
    assert models[0]["personas_discovered"]["chosen_k"] >= 2


def test_a_log_of_more_customers_than_the_fit_sample(three, monkeypatch):
    """Past ``FIT_SAMPLE`` customers the mixture is fitted on a seeded sample of them and every customer
    is given its posterior under that fit (memory bounded by the sample): both readers agree, the
    record says so, and the personas are still the truth's."""
    from calibration import discovery

    monkeypatch.setattr(discovery, "FIT_SAMPLE", 8_000)
    got = {reader: calibrate(three["plain"], personas="auto", reader=reader) for reader in ("stream", "memory")}
    assert _without_provenance(got["stream"]) == _without_provenance(got["memory"])
    rec = got["stream"].extras["personas_discovered"]
    assert rec["customers"] == 20_000 and rec["customers_in_fit"] == 8_000 and rec["chosen_k"] == 3
    assert "on a random sample of 8,000 of the 20,000 customers" in rec["fit"]
    out = three["folder"] / "sampled.json"
    res = runner.invoke(app, ["calibrate", str(three["plain"]), "--out", str(out), "--personas", "auto"])
    assert res.exit_code == 0, res.output
    assert "The chosen K fitted on a random sample of 8,000 of the 20,000 customers; every customer's posterior " \
           "under that fit" in " ".join(res.output.split())
    world, found = three["world"], got["stream"]
    order = np.argsort(-world.persona_share)
    print("shares", found.persona_share, "truth", world.persona_share[order])
    assert np.abs(found.persona_share - world.persona_share[order]).max() <= 0.05
    truth = evaluate(world).conversion_by_persona[order]
    assert np.abs(evaluate(found).conversion_by_persona - truth).max() <= 0.04
