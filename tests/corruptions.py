"""Logs with random bad cells, for tests that every reader refuses them with the in-memory loader's line
(or, where the cells are harmless, gives its model).

`corrupted(shape, seed, n)` yields ``n`` copies of a small simulated log, each with one to three cells
replaced by a value that is empty, unreadable or out of range, or (every fourth log) harmless only (a
row the [filter] drops, a satisfaction left empty), and writes each as a CSV, one Parquet file and a folder of three."""
from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import InputError
from worlds import make_world, simulate_log

FILTER_AND_STAGES = """
[filter]
site = "shop"

[stage]
column = "status"
end_values = ["cancelled"]

[stage.values]
awareness = "awareness"
consideration = "consideration"
decision = "decision"
retention = "retention"
advocacy = "advocacy"
"""  # a [filter] and a [stage] rule with an end value (tests/test_cluster.py's mapping too)

MAPPED = FILTER_AND_STAGES + """
[persona]
column = "score"
bands = [0, 40, 70]
labels = ["low", "mid", "high"]

[timestamp]
dayfirst = true
"""

BAD = {
    "plain": {
        "customer_id": [None, ""],
        "timestamp": [None, "", "yesterday", "2300-01-01T00:00:00Z", "1500-01-01T00:00:00Z", "2024-02-31", "12345"],
        "touchpoint": [None, ""],
        "stage": [None, "", "purchase", "Awareness"],
        "persona": [None, ""],
        "satisfaction": ["6", "x", "0", "NaN", ""],
        "value": ["-1", "abc", "inf", "NaN", ""],
    },
    "mapped": {
        "customer_id": [None, ""],
        "timestamp": [None, "", "yesterday", "31/02/2024 10:00:00", "2024-01-05T00:00:00Z", "13/13/2024 00:00:00"],
        "touchpoint": [None, ""],
        "status": [None, "", "purchase", "cancelled"],
        "site": [None, "", "test"],
        "score": [None, "", "x", "-5", "200"],
    },
}

HARMLESS = {"plain": {"satisfaction": ["", "3"], "value": ["", "0", "12.5"]},
            "mapped": {"site": ["test"], "score": ["55"]}}


@dataclass
class Corrupted:
    """One corrupted log, as the files every reader reads."""

    csv: Path
    parquet: Path  # one file (the in-memory loader's)
    folder: Path  # the same rows as three Parquet files (the stream's and the cluster's)
    mapping: Path | None


def _log(shape: str, seed: int) -> pd.DataFrame:
    events = simulate_log(make_world(3), 600, seed=1).events
    rng = np.random.default_rng(seed)
    ids = events["customer_id"].astype(str)
    if shape == "plain":
        log = events.astype({c: str for c in events.columns})
        log["satisfaction"] = np.where(rng.random(len(log)) < 0.3, rng.integers(1, 6, len(log)).astype(str), "")
        log["value"] = np.where(rng.random(len(log)) < 0.2, (rng.random(len(log)) * 100).round(2).astype(str), "")
        return log
    score = pd.Series(rng.integers(0, 100, ids.nunique()).astype(str), index=ids.unique())[ids].to_numpy()
    return pd.DataFrame({
        "customer_id": ids, "timestamp": pd.to_datetime(events["timestamp"], utc=True).dt.strftime("%d/%m/%Y %H:%M:%S"),
        "touchpoint": events["touchpoint"].astype(str), "status": events["stage"].astype(str),
        "site": np.where(rng.random(len(events)) < 0.9, "shop", "test"), "score": score})


def corrupted(shape: str, seed: int, n: int, folder: Path) -> Iterator[Corrupted]:
    """``n`` corrupted copies of the ``shape`` ("plain" or "mapped") log, written under ``folder``."""
    base = _log(shape, seed)
    mapping = None
    if shape == "mapped":
        mapping = folder / "mapping.toml"
        mapping.write_text(MAPPED)
    bad = BAD[shape]
    for k in range(n):
        rng = random.Random(seed * 1000 + k)
        log = base.copy()
        for _ in range(rng.randint(1, 3)):
            column = rng.choice(list(bad))
            if k % 4 == 3:  # a quarter of the logs have harmless cells only: their models are compared
                column = rng.choice(list(HARMLESS[shape]))
                log.at[rng.randrange(len(log)), column] = rng.choice(HARMLESS[shape][column])
                continue
            # now and then the first row (a dayfirst layout is read from it) or an early one
            row = 0 if rng.random() < 0.1 else rng.randrange(200 if rng.random() < 0.3 else len(log))
            log.at[row, column] = rng.choice(bad[column])
        here = folder / f"{shape}-{k}"
        (here / "parts").mkdir(parents=True)
        log.to_csv(here / "log.csv", index=False)
        table = pa.Table.from_pandas(log, preserve_index=False)
        pq.write_table(table, here / "log.parquet", row_group_size=700)
        cuts = [0, len(log) // 3, 2 * len(log) // 3, len(log)]
        for i in range(3):
            pq.write_table(table.slice(cuts[i], cuts[i + 1] - cuts[i]), here / "parts" / f"part-{i}.parquet",
                           row_group_size=700)
        yield Corrupted(csv=here / "log.csv", parquet=here / "log.parquet", folder=here / "parts", mapping=mapping)


def outcome(log: Path, **options) -> str:
    """``calibration(log, **options)``'s refusal as its one line, or its model (provenance and the log's
    path and hash aside)."""
    from calibration.calibrate import calibration

    try:
        model = calibration(log, **options).model
    except InputError as exc:
        return str(exc)
    content = json.loads(model.to_json())
    content.pop("provenance", None)
    for key in ("source", "sha256"):
        content["log"].pop(key, None)
    return json.dumps(content, sort_keys=True)
