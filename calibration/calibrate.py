"""`journey calibrate`: event log in, model JSON out."""
from __future__ import annotations

from pathlib import Path

from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate
from calibration.experience import satisfaction_by_cell
from calibration.load import load_events
from calibration.mapping import load_mapping
from calibration.value import value_section
from sim.model import Model
from sim.runs import check_output_file, provenance, utc_now, write_text_atomic


def calibrate(events: str | Path, *, stages: str | None = None, conversion_stage: str | None = None,
              inactivity_days: float = DEFAULT_INACTIVITY_DAYS, mapping: str | Path | None = None,
              before: float | None = None, censoring: str = "cure", dwell: str = "way_out",
              currency: str | None = None) -> Model:
    log = load_events(events, stages=stages, conversion_stage=conversion_stage, mapping=mapping, before=before)
    model = estimate(log, inactivity_days=inactivity_days, censoring=censoring, dwell=dwell)
    if log.satisfaction is not None:
        model.extras["experience"] = satisfaction_by_cell(log)
    if currency is None and mapping is not None:
        currency = load_mapping(mapping).currency
    section = value_section(log, currency)
    if section:
        model.extras["value"] = section
    return model


def run_calibrate(events: str | Path, out: str | Path, *, stages: str | None = None,
                  conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
                  mapping: str | Path | None = None, censoring: str = "cure", dwell: str = "way_out",
                  currency: str | None = None) -> Model:
    started = utc_now()
    check_output_file(out, "model", [events, mapping])  # before the work: never the log, never a user's file
    model = calibrate(events, stages=stages, conversion_stage=conversion_stage,
                      inactivity_days=inactivity_days, mapping=mapping, censoring=censoring, dwell=dwell,
                      currency=currency)
    args = {"events": str(events), "out": str(out), "stages": ",".join(model.stages),
            "conversion_stage": model.conversion_stage, "inactivity_days": inactivity_days, "censoring": censoring,
            "dwell": dwell, "mapping": str(mapping) if mapping else None}
    if currency is not None:  # only when given: earlier models' provenance stays as it was
        args["currency"] = currency
    model.provenance = provenance("calibrate", args, [events, mapping], started=started,
                                  known_hashes={str(events): model.log_summary["sha256"]})
    model.provenance["finished"] = utc_now()
    write_text_atomic(out, model.to_json())
    return model
