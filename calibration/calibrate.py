"""`journey calibrate`: event log in, model JSON out."""
from __future__ import annotations

from pathlib import Path

from application.rundir import check_output_file, provenance, utc_now, write_text_atomic
from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate
from calibration.experience import satisfaction_by_cell
from calibration.load import load_events
from calibration.mapping import load_mapping
from calibration.value import value_section
from sim.errors import InputError
from sim.limits import finite
from sim.model import Model


def calibrate(events: str | Path, *, stages: str | None = None, conversion_stage: str | None = None,
              inactivity_days: float = DEFAULT_INACTIVITY_DAYS, mapping: str | Path | None = None,
              before: float | None = None, censoring: str = "cure", dwell: str = "way_out",
              personas: str | int | None = None, seed: int | None = None,
              assignments: str | Path | None = None, currency: str | None = None,
              touch_order: int = 0) -> Model:
    """``touch_order``: 1 = touch sequences (calibration/estimate.py);
    ``personas`` (auto or K): discover them from behaviour when the log has none (calibration/personas.py);
    ``assignments``: also write each customer's posterior per persona there (CSV)."""
    from calibration import personas as discovery

    finite(inactivity_days, "--inactivity-days")  # nan and inf pass Typer's float parsing

    if assignments is not None:
        _check_assignments(assignments, events, personas)
    k = discovery.parse_personas(personas)
    log = load_events(events, stages=stages, conversion_stage=conversion_stage, mapping=mapping, before=before)
    record = None
    if k is not None:
        seed = discovery.DEFAULT_SEED if seed is None else seed
        log, posterior, record = discovery.discover(log, personas=personas, seed=seed,
                                                    inactivity_days=inactivity_days, censoring=censoring)
    model = estimate(log, inactivity_days=inactivity_days, censoring=censoring, dwell=dwell, touch_order=touch_order)
    if log.satisfaction is not None:
        model.extras["experience"] = satisfaction_by_cell(log)
    if record is not None:
        record["profiles"] = discovery.profiles(model)
        model.extras["personas_discovered"] = record
        if assignments is not None:
            write_text_atomic(assignments, discovery.assignments_csv(log, posterior, model.personas))
    if currency is None and mapping is not None:
        currency = load_mapping(mapping).currency
    section = value_section(log, currency)
    if section:
        model.extras["value"] = section
    return model


def _check_assignments(path: str | Path, events: str | Path, personas: str | int | None) -> None:
    if personas is None:
        raise InputError("needs --personas (there are no discovered personas to assign)", where="--assignments",
                         value=str(path), hint="add --personas auto")
    if Path(path).exists() and Path(events).exists() and Path(path).resolve() == Path(events).resolve():
        raise InputError("is the event log itself: it would be overwritten", file=path, where="--assignments",
                         hint="give another file name")


def run_calibrate(events: str | Path, out: str | Path, *, stages: str | None = None,
                  conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
                  mapping: str | Path | None = None, censoring: str = "cure", dwell: str = "way_out",
                  personas: str | int | None = None, seed: int | None = None,
                  assignments: str | Path | None = None, currency: str | None = None,
                  touch_order: int = 0) -> Model:
    started = utc_now()
    check_output_file(out, "model", [events, mapping])  # before the work: never the log, never a user's file
    if assignments is not None and Path(assignments).resolve() == Path(out).resolve():
        raise InputError("is the same file as --out", file=assignments, where="--assignments",
                         hint="give another file name")
    model = calibrate(events, stages=stages, conversion_stage=conversion_stage,
                      inactivity_days=inactivity_days, mapping=mapping, censoring=censoring, dwell=dwell,
                      personas=personas, seed=seed, assignments=assignments, currency=currency,
                      touch_order=touch_order)
    args = {"events": str(events), "out": str(out), "stages": ",".join(model.stages),
            "conversion_stage": model.conversion_stage, "inactivity_days": inactivity_days, "censoring": censoring,
            "dwell": dwell, "mapping": str(mapping) if mapping else None}
    if touch_order:  # only when asked: earlier models' provenance stays as it was
        args["touch_order"] = touch_order
    if personas is not None:
        args.update(personas=str(personas), seed=model.extras["personas_discovered"]["seed"],
                    assignments=str(assignments) if assignments else None)
    if currency is not None:  # only when given: earlier models' provenance stays as it was
        args["currency"] = currency
    model.provenance = provenance("calibrate", args, [events, mapping], started=started,
                                  known_hashes={str(events): model.log_summary["sha256"]})
    model.provenance["finished"] = utc_now()
    write_text_atomic(out, model.to_json())
    return model
