"""Hash the JSON, CSV and TOML outputs of a fixed set of journey runs, to show a refactor changed nothing.

Usage: python benchmarks/output_hashes.py OUT_DIR [--bpi EVENTS.csv.gz]

Runs `journey demo`, a compare of the example scenarios, an optimize and (with --bpi) a BPI 2012
calibration, backtest and drift, all seeded, then prints one `sha256  path` line per output file. Wall-clock
stamps (`started`, `finished`, `calibrated`) and the command line in manifests are blanked first:
they differ between any two runs; so do the checkout's and the output's paths, replaced by
placeholders. Figures (PNG) are not compared: their bytes depend on the
matplotlib build, and their data sits beside them as JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VOLATILE = {"started", "finished", "argv", "calibrated_at", "created"}


def blank(value):
    """The JSON with wall-clock fields blanked, recursively."""
    if isinstance(value, dict):
        # a hash of a file this script's runs wrote (a manifest, a model) hashes its wall-clock stamps
        return {k: ("-" if k in VOLATILE or k.endswith("manifest.json") or k.startswith("<out>") and isinstance(v, str)
                    else blank(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [blank(v) for v in value]
    return value


def digest(path: Path, out: Path) -> str:
    # the checkout's and the output's own paths appear in manifests: compare worktrees and folders
    data = path.read_bytes().replace(str(ROOT).encode(), b"<root>").replace(str(out).encode(), b"<out>")
    if path.suffix == ".json":
        data = json.dumps(blank(json.loads(data))).encode()  # key order kept: it is part of the output
    return hashlib.sha256(data).hexdigest()


def journey(*args: str) -> None:
    subprocess.run([sys.executable, "-c", "import cli; cli.main()", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--bpi", type=Path, default=None)
    args = parser.parse_args()
    out = args.out.resolve()
    ex = ROOT / "scenarios" / "examples"
    journey("demo", "--out", str(out / "demo"), "--quiet")
    journey("compare", str(ROOT / "scenarios/demo/model.json"), str(ex / "checkout_fix.toml"),
            str(ex / "double_email.toml"), str(ex / "drop_ads.toml"), "--seed", "3", "--customers", "50000",
            "--replications", "3", "--out", str(out / "compare"), "--quiet")
    journey("optimize", str(ex / "budget.toml"), "--trials", "40", "--seed", "2", "--out", str(out / "optimize"),
            "--quiet")
    journey("hotspots", str(ROOT / "scenarios/demo/model.json"), "--out", str(out / "hotspots.json"), "--seed", "4")
    if args.bpi is not None:
        mapping = str(ROOT / "scenarios/mappings/bpic2012_mapping.toml")
        journey("calibrate", str(args.bpi), "--mapping", mapping, "--out", str(out / "bpi_model.json"))
        journey("backtest", str(args.bpi), "--mapping", mapping, "--split", "2011-12-01",
                "--out", str(out / "bpi_backtest"))
        journey("drift", str(out / "bpi_backtest" / "model.json"), str(out / "bpi_model.json"),
                "--out", str(out / "drift"))
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".csv", ".toml"}:
            print(digest(path, out), path.relative_to(out))


if __name__ == "__main__":
    main()
