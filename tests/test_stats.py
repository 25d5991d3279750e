"""Sufficient statistics (calibration/stats.py): the model depends on the log only through sums that add
up over any split of the customers, and the sums hold no array per event.

Tolerance: 1e-9 on every probability and rate (the sums differ only in float addition order; the EM
fits stop at 1e-7 relative changes, so a split could move a fit by more only at a stopping boundary).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from calibration.buckets import BUCKETS, bucket_of, split_log
from calibration.estimate import check_options, estimate, estimate_stats, stats_of
from calibration.load import load_events
from calibration.stats import StatsSum, log_stats, merge_stats
from worlds import make_world, simulate_log, with_leave_speeds, with_phases

DATA = Path(__file__).parent / "data"
WORLD = with_phases(with_leave_speeds(make_world(71), seed=71), 3)
PARAMS = ("persona_share", "share", "advance", "drop", "lapse", "rate", "leave_speed", "phases", "follow")


@pytest.fixture(scope="module")
def world_log(tmp_path_factory):
    """Three personas, skips, a pain point, Erlang-3 stays, censored at 150 of 180 days of arrivals, with
    values and satisfaction scores."""
    path = tmp_path_factory.mktemp("stats") / "events.csv"
    events = simulate_log(WORLD, 6_000, seed=72, arrival_days=180.0, observe_days=150.0).events
    rng = np.random.default_rng(73)
    events["value"] = np.where(rng.random(len(events)) < 0.3, rng.gamma(2.0, 40.0, len(events)).round(2), 0.0)
    events["satisfaction"] = np.where(rng.random(len(events)) < 0.5, rng.integers(1, 6, len(events)), np.nan)
    events.to_csv(path, index=False)
    return load_events(path)


def _split_model(log, buckets: int, **options):
    phases = check_options(**{"inactivity_days": 30.0, **options}) == "phases"
    st = stats_of(log, inactivity_days=options.get("inactivity_days", 30.0), phases=phases, buckets=buckets)
    return estimate_stats(st, **options), st


def _assert_same(a, b, tol=1e-9):
    for name in PARAMS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        np.testing.assert_allclose(x, y, rtol=0, atol=tol, err_msg=name)
    for key, x in a.counts.items():
        np.testing.assert_allclose(np.asarray(x, float), np.asarray(b.counts[key], float), rtol=1e-9, atol=1e-9,
                                   err_msg=key)
    assert a.log_summary == b.log_summary
    assert a.estimator == b.estimator
    assert a.arrivals == b.arrivals


@pytest.mark.parametrize("options", [
    {}, {"dwell": "way_out"}, {"dwell": "plain"}, {"censoring": "window"},
    {"censoring": "window", "dwell": "phases"}, {"touch_order": 1}, {"inactivity_days": 10.0},
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_any_split_of_the_customers_gives_the_same_model(world_log, options):
    whole = estimate(world_log, **options)  # BUCKETS buckets
    for buckets in (1, 7):
        split, _ = _split_model(world_log, buckets, **options)
        _assert_same(whole, split)
    if options.get("dwell", "phases") == "phases" and not options.get("touch_order"):
        # the world's stays are Erlang-3: shapes were fitted, not skipped
        assert max(whole.estimator["dwell_phases"].values()) > 1


def test_a_short_history_where_every_row_enters(tmp_path):
    """A week of a 30-day window: the cure model's every-row branch, decided on the sums of the whole log."""
    path = tmp_path / "week.csv"
    simulate_log(make_world(74), 3_000, seed=74, arrival_days=7.0, observe_days=7.0).events.to_csv(path, index=False)
    log = load_events(path)
    whole = estimate(log)
    assert whole.estimator["outcome_rows"] == "all"
    _assert_same(whole, _split_model(log, 1)[0])
    _assert_same(whole, _split_model(log, 5)[0])


def test_real_log_slice_same_model_whatever_the_split():
    log = load_events(DATA / "bpic2012_slice.csv.gz",
                      mapping=Path(__file__).parents[1] / "scenarios" / "mappings" / "bpic2012_mapping.toml")
    whole = estimate(log, dwell="phases")
    _assert_same(whole, _split_model(log, 3, dwell="phases")[0])


def test_statistics_hold_no_array_per_event(world_log):
    """Dense sums do not grow with the log; per-customer arrays have one entry a customer."""
    _, st = _split_model(world_log, 1, dwell="phases")
    half = int(np.searchsorted(world_log.customer, world_log.n_customers // 2))
    _, small = _split_model(_head(world_log, half), 1, dwell="phases")
    for name in ("interactions", "decided", "advanced", "pairs", "move_exits", "move_days"):
        assert getattr(st, name).shape == getattr(small, name).shape
    assert st.arrival.size == world_log.n_customers
    assert st.tails.time.size == world_log.n_customers
    assert st.late.ps.size < world_log.n_customers
    for b in st.move_bins:  # binned stays: bounded by cells x log-time bins, far fewer than the moves
        assert b.key.size < st.move_timed.sum() / 2


def _head(log, rows: int):
    """The log's first customers (whole customers), as a log."""
    from calibration.buckets import _part

    customers = np.arange(int(log.customer[rows - 1]) + 1)
    keep = np.arange(int(np.searchsorted(log.customer, customers[-1] + 1)))
    code = np.arange(log.n_customers)
    return _part(log, keep, customers, code)


def test_experience_and_value_sums_add_up(world_log):
    whole = merge_stats([log_stats(world_log, end=world_log.end, inactivity_days=30.0)])
    parts = [log_stats(p, end=world_log.end, inactivity_days=30.0) for _, p in split_log(world_log, 9)]
    total = StatsSum()
    for p in parts:
        total.add(p)
    split = total.result()
    np.testing.assert_array_equal(whole.experience.n, split.experience.n)
    np.testing.assert_allclose(whole.experience.total, split.experience.total, rtol=1e-12)
    np.testing.assert_allclose(whole.value.groups, split.value.groups, rtol=1e-12)
    assert whole.value.rows_with_value == split.value.rows_with_value > 0


def test_buckets_are_stable_and_spread():
    ids = np.array([f"c{i}" for i in range(20_000)], dtype=object)
    b = bucket_of(ids)
    assert b.min() >= 0 and b.max() < BUCKETS
    counts = np.bincount(b, minlength=BUCKETS)
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()
    # pinned: the bucket of an id must not change between versions or machines (the sums' order would)
    assert bucket_of(["customer-42", "c1", "0", "", "é"]).tolist() == [6, 85, 95, 0, 81]
    # an id's bucket is its own, whatever ids share its batch (shorter ones add zeros past their end)
    ids = [f"id-{i}é" * (i % 4) for i in range(500)]
    arr = pa.chunked_array([pa.array(ids[:200]), pa.array(ids[200:])]).slice(37)
    assert bucket_of(arr).tolist() == [int(bucket_of([x])[0]) for x in ids[37:]]


def test_a_last_row_after_an_end_row_moves_the_end_back_on_every_path(tmp_path):
    """The stream's provisional end is the last row read; a row after a customer's end row is dropped, so
    the buckets are summed again at the true end. Also a stage some way out leaves without a timed exit:
    the phase fit's sums of no rows stay floats."""
    from calibration.calibrate import calibrate

    rows = ["customer_id,timestamp,activity"]
    for i in range(300):
        rows += [f"c{i},2024-01-{1 + i % 20:02d}T10:00:00Z,web",
                 f"c{i},2024-01-{2 + i % 20:02d}T10:00:00Z,{['quit', 'buy', 'look'][i % 3]}"]
    rows.append("c0,2024-02-20T10:00:00Z,web")  # after c0's end row ("quit"): ignored
    (tmp_path / "e.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "m.toml").write_text('stages = ["visit", "considering", "bought"]\n[columns]\ntouchpoint = "activity"\n'
                                     '[stage]\ncolumn = "activity"\nvalues = { buy = "bought", look = "considering" }\n'
                                     'end_values = ["quit"]\n')
    streamed = calibrate(tmp_path / "e.csv", mapping=tmp_path / "m.toml")
    whole = calibrate(tmp_path / "e.csv", mapping=tmp_path / "m.toml", reader="memory")
    assert streamed.log_summary["last_timestamp"] == "2024-01-21T10:00:00Z"
    assert streamed.to_json() == whole.to_json()
