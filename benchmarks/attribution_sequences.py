"""How far journey's attribution is from first-order Markov attribution when the next channel
depends on the last one (issue 13).

    python benchmarks/attribution_sequences.py [--paths 30000] [--self-loop 0.6] [--seed 1]

journey draws each interaction's touchpoint by share, independently of the previous one. Real
multi-touch logs have sequences (a customer who met social meets social again). This simulates
paths whose next channel is the last one with probability ``--self-loop`` (else by share), writes
them as a log with every journey finished, calibrates it with `journey calibrate`, and prints per
channel journey's removal effect and attributed share beside the Markov attribution counted from
the same paths (and the truth of the chain). The world is tests/test_attribution.py's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_attribution import (  # noqa: E402
    CHANNELS,
    START,
    W,
    markov_attribution,
    read_paths,
    simulate_paths,
    transition_matrix,
    true_matrix,
    write_log,
)

from calibration.calibrate import calibrate  # noqa: E402
from sim.hotspots import hotspots_record  # noqa: E402


def sequence_matrix(self_loop: float) -> np.ndarray:
    """Next channel: the last one with probability ``self_loop``, else drawn by share."""
    return self_loop * np.eye(len(W)) + (1.0 - self_loop) * np.tile(W, (len(W), 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=30_000)
    ap.add_argument("--self-loop", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    for loop in args.self_loop:
        nxt = sequence_matrix(loop)
        rng = np.random.default_rng(args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "events.csv"
            write_log(simulate_paths(rng, args.paths, W, nxt), rng, log)
            model = calibrate(log, stages="visit,buy", conversion_stage="buy")
            paths = read_paths(log)
        record = hotspots_record(model, name="seq", top=1)
        ours = {r["touchpoint"]: r for r in record.attribution}
        effect, share = markov_attribution(*transition_matrix(paths, CHANNELS), CHANNELS)
        states, M = true_matrix()
        M[1:len(W) + 1, 1:len(W) + 1] = M[1:len(W) + 1, 1:len(W) + 1].sum(1, keepdims=True) * nxt
        true_effect, _ = markov_attribution(states, M, CHANNELS)
        assert states[0] == START
        print(f"self-loop {loop}: {args.paths} paths, conversion {record.expected_conversion_rate:.4f}")
        print(f"{'channel':10s} {'journey RE':>10s} {'Markov RE':>10s} {'diff':>7s} {'true RE':>8s} "
              f"{'journey AS':>10s} {'Markov AS':>10s} {'diff':>7s}")
        rows = []
        for c in sorted(CHANNELS, key=lambda c: -effect[c]):
            o = ours[c]
            rows.append({"channel": c, "journey_removal_effect": o["removal_effect"],
                         "markov_removal_effect": effect[c], "true_removal_effect": true_effect[c],
                         "journey_share": o["attributed_share"], "markov_share": share[c]})
            print(f"{c:10s} {o['removal_effect']:10.3f} {effect[c]:10.3f} {o['removal_effect'] - effect[c]:+7.3f} "
                  f"{true_effect[c]:8.3f} {o['attributed_share']:10.3f} {share[c]:10.3f} "
                  f"{o['attributed_share'] - share[c]:+7.3f}")
        print(json.dumps({"self_loop": loop, "rows": rows}))


if __name__ == "__main__":
    main()
