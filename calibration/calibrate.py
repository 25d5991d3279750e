"""`journey calibrate`: event log in, model JSON out."""
from __future__ import annotations

from pathlib import Path

from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate
from calibration.experience import satisfaction_by_cell
from calibration.load import load_events
from sim.limits import finite
from sim.model import Model
from sim.runs import provenance, utc_now, write_text_atomic


def calibrate(events: str | Path, *, stages: str | None = None, conversion_stage: str | None = None,
              inactivity_days: float = DEFAULT_INACTIVITY_DAYS, mapping: str | Path | None = None,
              before: float | None = None, censoring: str = "cure", dwell: str = "way_out") -> Model:
    finite(inactivity_days, "--inactivity-days")  # nan and inf pass Typer's float parsing
    log = load_events(events, stages=stages, conversion_stage=conversion_stage, mapping=mapping, before=before)
    model = estimate(log, inactivity_days=inactivity_days, censoring=censoring, dwell=dwell)
    if log.satisfaction is not None:
        model.extras["experience"] = satisfaction_by_cell(log)
    return model


def run_calibrate(events: str | Path, out: str | Path, *, stages: str | None = None,
                  conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
                  mapping: str | Path | None = None, censoring: str = "cure", dwell: str = "way_out") -> Model:
    started = utc_now()
    model = calibrate(events, stages=stages, conversion_stage=conversion_stage,
                      inactivity_days=inactivity_days, mapping=mapping, censoring=censoring, dwell=dwell)
    args = {"events": str(events), "out": str(out), "stages": ",".join(model.stages),
            "conversion_stage": model.conversion_stage, "inactivity_days": inactivity_days, "censoring": censoring,
            "dwell": dwell, "mapping": str(mapping) if mapping else None}
    model.provenance = provenance("calibrate", args, [events, mapping], started=started,
                                  known_hashes={str(events): model.log_summary["sha256"]})
    model.provenance["finished"] = utc_now()
    write_text_atomic(out, model.to_json())
    return model
