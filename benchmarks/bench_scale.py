"""Calibration at scale: events/s and peak memory at 1 M, 10 M and 51 M events, every reader, one run.

    python benchmarks/bench_scale.py [--sizes 1M,10M,51M] [--skip-memory] [--workers 1,2]

Logs (made once, kept in /tmp/journey-bench): benchmarks/bench_calibrate.py's ``make_log`` world as
CSV at 1 M and 10 M events, each also as Parquet (the Dask path reads Parquet); at 51 M the 10 M world
written five times with customer ids suffixed -0 .. -4 (distinct customers), a folder of 5 Parquet files.

Each method runs as a fresh process; its peak memory is the peak of the summed RSS of its whole
process tree (Dask's nanny and worker processes included), sampled every 50 ms:
  * pandas.read_csv: a bare ``pandas.read_csv`` (CSV only): issue 18's yardstick. It leaves the
    timestamps as text, which no calibration can, so three more yardsticks read the same CSV:
  * pandas parse_dates: ``pandas.read_csv(..., parse_dates=["timestamp"])``;
  * pyarrow.csv.read_csv: Arrow's multi-threaded reader, which types the ISO timestamps as it reads;
  * floor: the least any calibration of the log must do, written plainly with Arrow and numpy: that
    read, the customer ids and names coded, the rows sorted by customer and time (`floor`);
  * duckdb one statistic: DuckDB (where installed: ``pip install duckdb``) reads the CSV and computes
    one of the dozen statistics a calibration needs, the time since each customer's previous event
    summed per persona, stage and touchpoint (a window over customers, then a group-by; `DUCKDB_LAG`);
  * pandas X.Y read_csv (``--other-python PATH``): the bare read by another Python's pandas (say a
    venv with ``pandas==2.2.3``, which this project also supports: it reads text into Python
    objects, pandas 3 into Arrow strings);
  * memory: ``journey calibrate --reader memory`` (today's loader: the whole log in memory);
  * stream: ``journey calibrate`` (the default, out of core);
  * dask N: ``journey calibrate LOG --scheduler local --workers N`` (a LocalCluster of N processes).

Below 51 M each method runs ``--repeat`` times (default 3), at 51 M ``--repeat-large`` times (default 1),
and the table shows the median wall; every
calibrating method's model is checked against the first one at its size ("same model": everything but
the provenance and the log's path and hash, to the bit).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

FOLDER = Path(tempfile.gettempdir()) / "journey-bench"
SIZES = {"1M": 1_000_000, "10M": 10_000_000, "51M": 51_000_000}


# ------------------------------------------------------------------------------------------- the logs


def _wait_for(path: Path) -> None:
    """Another helper may be writing the log: wait until no .partial is left and the size is steady."""
    partial = path.with_name(path.name + ".partial")
    while partial.exists():
        time.sleep(5)
    size = -1
    while path.exists() and path.stat().st_size != size:
        size = path.stat().st_size
        time.sleep(2)


def csv_log(rows: int) -> Path:
    """The world's log as CSV (bench_calibrate's make_log), made once."""
    path = FOLDER / f"events-{rows}.csv"
    _wait_for(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_calibrate.py"), "--make", str(partial),
                        "--rows", str(rows)], check=True)
        partial.rename(path)
    return path


def parquet_log(rows: int, copies: int = 1, one_file: bool = False) -> Path:
    """The CSV log as Parquet (all columns as text, so every reader parses the same values); with
    ``copies`` > 1 a folder of that many copies, customer ids suffixed ``-k`` (``one_file``: one file)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    src = csv_log(rows)
    path = FOLDER / (f"events-{rows}.parquet" if copies == 1 else f"events-{rows}x{copies}"
                     + (".parquet" if one_file else ""))
    if path.exists():
        return path
    names = ["customer_id", "timestamp", "touchpoint", "stage", "persona"]
    table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
    partial = path.with_name(path.name + ".partial")
    if copies == 1:
        pq.write_table(table, partial, row_group_size=1 << 20)
    elif one_file:
        with pq.ParquetWriter(partial, table.schema) as writer:
            for k in range(copies):
                ids = pc.binary_join_element_wise(table["customer_id"], pa.scalar(f"{k}"), "-")
                writer.write_table(table.set_column(0, "customer_id", ids), row_group_size=1 << 20)
    else:
        partial.mkdir()
        for k in range(copies):
            ids = pc.binary_join_element_wise(table["customer_id"], pa.scalar(f"{k}"), "-")
            pq.write_table(table.set_column(0, "customer_id", ids), partial / f"part-{k}.parquet",
                           row_group_size=1 << 20)
    partial.rename(path)
    return path


def n_rows(path: Path) -> int:
    """Data rows of a CSV file or a Parquet file or folder."""
    import pyarrow.parquet as pq

    if path.suffix == ".csv":
        with path.open("rb") as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b"")) - 1
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ---------------------------------------------------------------------------------------------- runs


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (GB) of the whole process tree, exit code."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        total = 0
        for p in tree:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        peak = max(peak, total)
        time.sleep(0.05)
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    wall = time.perf_counter() - t
    if proc.returncode:
        print(f"  failed ({proc.returncode}): {' '.join(cmd)}\n  {err.strip().splitlines()[-1:]}", file=sys.stderr)
    return wall, peak / 1e9, proc.returncode


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")] + [env.get("PYTHONPATH", "")])
    return env


def methods(workers: list[int], out: Path, other_python: str | None = None) -> list[tuple[str, str, object]]:
    """(name, how, command maker(log, model path) -> argv or None) for each method: fresh `journey
    calibrate` processes, each writing its model to the path given."""
    py = sys.executable
    other = []
    if other_python:
        version = subprocess.run([other_python, "-c", "import pandas; print(pandas.__version__)"], check=True,
                                 capture_output=True, text=True).stdout.strip()

        def other_pandas(log, model):
            if log.suffix != ".csv":
                return None
            return [other_python, "-c", f"import pandas; pandas.read_csv({str(log)!r})"]

        other = [(f"pandas {version} read_csv", "", other_pandas)]

    def pandas(log, model):
        return [py, "-c", f"import pandas; pandas.read_csv({str(log)!r})"] if log.suffix == ".csv" else None

    def pandas_times(log, model):
        return ([py, "-c", f"import pandas; pandas.read_csv({str(log)!r}, parse_dates=['timestamp'])"]
                if log.suffix == ".csv" else None)

    def arrow(log, model):
        return [py, "-c", f"import pyarrow.csv; pyarrow.csv.read_csv({str(log)!r})"] if log.suffix == ".csv" else None

    def least(log, model):
        return [py, str(Path(__file__).resolve()), "--floor", str(log)] if log.suffix == ".csv" else None

    def duckdb_lag(log, model):
        if log.suffix != ".csv" or importlib.util.find_spec("duckdb") is None:
            return None
        return [py, "-c", f"import duckdb; duckdb.sql({DUCKDB_LAG.format(log=str(log))!r}).fetchall()"]

    def memory(log, model):
        return ["journey", "calibrate", str(log), "--reader", "memory", "--out", str(model)]

    def stream(log, model):
        return ["journey", "calibrate", str(log), "--out", str(model)]

    def dask(n):
        def cmd(log, model):
            if log.suffix == ".csv":  # the Dask path reads Parquet
                return None
            return ["journey", "calibrate", str(log), "--scheduler", "local", "--workers", str(n), "--out", str(model)]
        return cmd

    return ([("pandas.read_csv", "", pandas)] + other + [("pandas parse_dates", "", pandas_times),
             ("pyarrow.csv.read_csv", "", arrow), ("floor", "", least),
             ("duckdb one statistic", "", duckdb_lag), ("memory", "cli", memory),
             ("stream", "cli", stream)]
            + [(f"dask {n}", "cli", dask(n)) for n in workers])


DUCKDB_LAG = """select persona, stage, touchpoint, count(*), sum(gap) from (
  select persona, stage, touchpoint,
         epoch(timestamp) - epoch(lag(timestamp) over (partition by customer_id order by timestamp)) as gap
  from read_csv({log!r})) group by all"""


def floor(log: Path) -> None:
    """The least any calibration of a CSV log does: read it with the timestamps typed (Arrow's reader),
    code the customer ids, and sort the rows by customer and time (numpy), keeping the coded columns."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(log, convert_options=pacsv.ConvertOptions(column_types={"customer_id": pa.string()}))
    customer = pc.dictionary_encode(table["customer_id"]).combine_chunks().indices.to_numpy()
    time = pc.cast(table["timestamp"], pa.int64()).to_numpy()
    order = np.lexsort((time, customer))
    kept = [customer[order], time[order]]
    for name in ("touchpoint", "stage", "persona"):
        kept.append(pc.dictionary_encode(table[name]).combine_chunks().indices.to_numpy()[order])


def ratios(table: list[tuple]) -> list[str]:
    """The stream's wall over each yardstick's, at each CSV size."""
    lines = []
    for size in dict.fromkeys(row[0] for row in table):
        walls = {row[2]: row[5] for row in table if row[0] == size and row[1] == "csv" and not row[8]}
        if "stream" not in walls:
            continue
        names = [n for n in walls if n.startswith("pandas ") and n.endswith(" read_csv")]
        for name in ["pandas.read_csv", *names, "pandas parse_dates", "pyarrow.csv.read_csv", "floor",
                     "duckdb one statistic"]:
            if name in walls:
                lines.append(f"{size} CSV: stream / {name} = {walls['stream'] / walls[name]:.2f}")
    return lines


def model_content(path: Path) -> dict | None:
    """A model JSON without what names the run or the file (provenance, the log's path and hash): two
    readers of the same rows must agree on everything else, to the bit."""
    if not path.exists():
        return None
    model = json.loads(path.read_text())
    model.pop("provenance", None)
    for key in ("source", "sha256"):
        model.get("log", {}).pop(key, None)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1M,10M,51M", help="comma-separated: 1M, 10M, 51M")
    ap.add_argument("--workers", default="1,2", help="Dask worker counts")
    ap.add_argument("--skip-memory", action="store_true", help="skip the in-memory path at 51 M (~16 GB)")
    ap.add_argument("--only", default="", help="comma-separated method names to run (default: all)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each method below 51 M (the table shows the median wall)")
    ap.add_argument("--repeat-large", type=int, default=1, help="runs of each method at 51 M")
    ap.add_argument("--other-python", help="another Python whose pandas' bare read_csv is timed too "
                    "(e.g. a venv with pandas==2.2.3)")
    ap.add_argument("--floor", type=Path, help=argparse.SUPPRESS)  # one run of `floor` (a fresh process)
    args = ap.parse_args()
    if args.floor is not None:
        floor(args.floor)
        return
    FOLDER.mkdir(exist_ok=True)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    only = {m.strip() for m in args.only.split(",") if m.strip()}
    out = Path(tempfile.mkdtemp(prefix="journey-bench-out-"))
    table = []
    for size in sizes:
        rows = SIZES[size]
        logs = [parquet_log(10_000_000, 5)] if size == "51M" else [csv_log(rows), parquet_log(rows)]
        first_model = None  # every method's model at this size must be the first one's
        for log in logs:
            n = n_rows(log)
            fmt = "Parquet folder" if log.is_dir() else log.suffix.lstrip(".")
            for name, how, make in methods(workers, out, args.other_python):
                if only and name not in only:
                    continue
                if name == "memory" and size == "51M":
                    if args.skip_memory:
                        continue
                    log_used = parquet_log(10_000_000, 5, one_file=True)  # the loader reads files, not folders
                else:
                    log_used = log
                if log.suffix == ".parquet" and name in ("memory", "stream") and log.with_suffix(".csv").exists():
                    continue  # the single-process readers are measured on the CSV
                model = out / f"{size}-{fmt}-{name.replace(' ', '')}.json"
                cmd = make(log_used, model)
                if cmd is None:
                    continue
                repeat = args.repeat_large if size == "51M" else args.repeat
                runs = [measure(cmd, _env()) for _ in range(max(repeat, 1))]
                walls = sorted(r[0] for r in runs)
                wall, peak, rc = walls[len(walls) // 2], max(r[1] for r in runs), max(r[2] for r in runs)
                same = ""
                if how == "cli" and not rc:
                    content = model_content(model)
                    first_model = content if first_model is None else first_model
                    same = "yes" if content == first_model else "NO"
                table.append((size, fmt, name, how, n, wall, walls, peak, rc, same))
                print(f"{size} {fmt} {name} ({how}): {wall:.1f} s (runs {', '.join(f'{w:.1f}' for w in walls)}), "
                      f"{peak:.2f} GB, same model: {same or '-'}" + (f", exit {rc}" if rc else ""), file=sys.stderr)
    print("| events | log | method | wall s (median) | runs | M events/s | peak RSS GB | same model |")
    print("|---|---|---|---:|---|---:|---:|---|")
    for _size, fmt, name, _how, n, wall, walls, peak, rc, same in table:
        rate = "failed" if rc else f"{n / wall / 1e6:.2f}"
        print(f"| {n / 1e6:.1f} M | {fmt} | {name} | {wall:.1f} | {' '.join(f'{w:.1f}' for w in walls)} | {rate} "
              f"| {peak:.2f} | {same} |")
    import pandas
    import pyarrow

    print("\n" + "\n".join(ratios(table)))
    duck = importlib.util.find_spec("duckdb") and importlib.import_module("duckdb").__version__
    print(f"\npandas {pandas.__version__}, pyarrow {pyarrow.__version__}, duckdb {duck or 'not installed'}, "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
