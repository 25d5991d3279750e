"""Weekly conversions after a split: journey's forecast against seasonal naive, over several splits of a log.

    python benchmarks/forecast_backtest.py LOG --mapping MAPPING --splits 2011-11-15 2011-12-01 ...
        [--dwell way_out phases] [--draws 200] [--seed 0]

For each split and dwell model, `journey backtest`'s own computation (calibration.backtest.backtest):
fit on the rows before the split, forecast the full weeks after it, and compare with the log's weekly
conversions. Prints the mean absolute error (conversions a week) of the forecast, of the forecast given
the actual arrivals, and of the seasonal-naive baseline the backtest chose, plus the end-rate error at the
conversion stage, and the seconds each backtest took. With draws (as `journey backtest --draws`, seeded
as its `--seed`), also how many weeks' observed conversions fall inside each prediction's 95 % interval,
per split and over all splits. On BPI 2012 (the shared loan log, mapping
scenarios/mappings/bpic2012_mapping.toml) the README's and docs/backtest.md's tables come from this.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from application.context import RunContext  # noqa: E402
from calibration.backtest import backtest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--mapping", type=Path, default=None)
    parser.add_argument("--splits", nargs="+", required=True)
    parser.add_argument("--dwell", nargs="+", default=["way_out"])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ctx = RunContext(args.seed)
    print(f"{'split':<11} {'dwell':<8} {'weeks':>5} {'obs/wk':>7} {'forecast':>9} {'given arr.':>10} "
          f"{'naive':>7} {'end err':>8} {'in 95 %':>8} {'given':>6} {'s':>5}")
    wins = {d: 0 for d in args.dwell}
    inside = {d: {"predicted": [0, 0], "predicted_given_arrivals": [0, 0]} for d in args.dwell}
    for split in args.splits:
        for dwell in args.dwell:
            start = time.perf_counter()
            record, _ = backtest(args.log, split=split, mapping=args.mapping, dwell=dwell, draws=args.draws,
                                 draw_stream=ctx.stream("draws"), stream=ctx.stream("backtest"))
            seconds = time.perf_counter() - start
            out = record.to_dict()
            weekly, conv = out.get("weekly_conversions"), out["conversion_stage"]
            if not weekly or not weekly.get("mae"):
                print(f"{split:<11} {dwell:<8} no full week after the split")
                continue
            mae = weekly["mae"]
            wins[dwell] += mae["predicted"] < mae["seasonal_naive"]
            end_error = 100 * abs(out["predicted"][conv] - out["observed"][conv])
            cov = weekly.get("coverage") or {}
            for key, c in cov.items():
                inside[dwell][key][0] += c["inside"]
                inside[dwell][key][1] += c["weeks"]
            shown = {k: f"{c['inside']}/{c['weeks']}" for k, c in cov.items()}
            print(f"{split:<11} {dwell:<8} {weekly['weeks']:>5} {weekly['mean_observed']:>7.1f} "
                  f"{mae['predicted']:>9.1f} {mae['predicted_given_arrivals']:>10.1f} {mae['seasonal_naive']:>7.1f} "
                  f"{end_error:>5.2f} pt {shown.get('predicted', '-'):>8} "
                  f"{shown.get('predicted_given_arrivals', '-'):>6} {seconds:>5.1f}")
    for dwell, n in wins.items():
        print(f"{dwell}: the forecast beats seasonal naive at {n} of {len(args.splits)} splits")
        for key, (k, w) in inside[dwell].items():
            if w:
                print(f"{dwell}: {key}: {k} of {w} weeks inside the 95 % interval ({100 * k / w:.0f} %)")


if __name__ == "__main__":
    main()
