"""Weekly conversions after a split: journey's forecast against seasonal naive, over several splits of a log.

    python benchmarks/forecast_backtest.py LOG --mapping MAPPING --splits 2011-11-15 2011-12-01 ...
        [--dwell way_out phases]

For each split and dwell model, `journey backtest`'s own computation (calibration.backtest.backtest):
fit on the rows before the split, forecast the full weeks after it, and compare with the log's weekly
conversions. Prints the mean absolute error (conversions a week) of the forecast, of the forecast given
the actual arrivals, and of the seasonal-naive baseline the backtest chose, plus the end-rate error at the
conversion stage, and the seconds each backtest took. On BPI 2012 (the shared loan log, mapping
scenarios/mappings/bpic2012_mapping.toml) the README's and docs/backtest.md's tables come from this.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.backtest import backtest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--mapping", type=Path, default=None)
    parser.add_argument("--splits", nargs="+", required=True)
    parser.add_argument("--dwell", nargs="+", default=["way_out"])
    args = parser.parse_args()
    print(f"{'split':<11} {'dwell':<8} {'weeks':>5} {'obs/wk':>7} {'forecast':>9} {'given arr.':>10} "
          f"{'naive':>7} {'end err':>8} {'s':>5}")
    wins = {d: 0 for d in args.dwell}
    for split in args.splits:
        for dwell in args.dwell:
            start = time.perf_counter()
            record, _ = backtest(args.log, split=split, mapping=args.mapping, dwell=dwell)
            seconds = time.perf_counter() - start
            out = record.to_dict()
            weekly, conv = out.get("weekly_conversions"), out["conversion_stage"]
            if not weekly or not weekly.get("mae"):
                print(f"{split:<11} {dwell:<8} no full week after the split")
                continue
            mae = weekly["mae"]
            wins[dwell] += mae["predicted"] < mae["seasonal_naive"]
            end_error = 100 * abs(out["predicted"][conv] - out["observed"][conv])
            print(f"{split:<11} {dwell:<8} {weekly['weeks']:>5} {weekly['mean_observed']:>7.1f} "
                  f"{mae['predicted']:>9.1f} {mae['predicted_given_arrivals']:>10.1f} {mae['seasonal_naive']:>7.1f} "
                  f"{end_error:>5.2f} pt {seconds:>5.1f}")
    for dwell, n in wins.items():
        print(f"{dwell}: the forecast beats seasonal naive at {n} of {len(args.splits)} splits")


if __name__ == "__main__":
    main()
