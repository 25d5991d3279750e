"""Calibration: event log in, Model out (pure; `journey calibrate` writes it: application/calibrate.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate
from calibration.experience import satisfaction_by_cell
from calibration.load import load_events
from calibration.mapping import load_mapping
from calibration.value import value_section
from sim.errors import InputError
from sim.limits import finite
from sim.model import Model


@dataclass
class Calibration:
    """A calibrated model and, when asked for, each customer's posterior per discovered persona (CSV text)."""

    model: Model
    assignments_csv: str | None = None


def calibrate(events: str | Path, *, stages: str | None = None, conversion_stage: str | None = None,
              inactivity_days: float = DEFAULT_INACTIVITY_DAYS, mapping: str | Path | None = None,
              before: float | None = None, censoring: str = "cure", dwell: str | None = None,
              personas: str | int | None = None, seed: int | None = None, currency: str | None = None,
              touch_order: int = 0) -> Model:
    """The model of an event log (see `calibration`)."""
    return calibration(events, stages=stages, conversion_stage=conversion_stage, inactivity_days=inactivity_days,
                       mapping=mapping, before=before, censoring=censoring, dwell=dwell, personas=personas,
                       seed=seed, currency=currency, touch_order=touch_order).model


def calibration(events: str | Path, *, stages: str | None = None, conversion_stage: str | None = None,
                inactivity_days: float = DEFAULT_INACTIVITY_DAYS, mapping: str | Path | None = None,
                before: float | None = None, censoring: str = "cure", dwell: str | None = None,
                personas: str | int | None = None, seed: int | None = None,
                assignments: str | Path | None = None, currency: str | None = None,
                touch_order: int = 0) -> Calibration:
    """``touch_order``: 1 = touch sequences (calibration/estimate.py);
    ``personas`` (auto or K): discover them from behaviour when the log has none (calibration/personas.py);
    ``assignments``: the file each customer's posterior per persona is meant for (checked here; its CSV
    text comes back in the record)."""
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
    csv = None
    if record is not None:
        record["profiles"] = discovery.profiles(model)
        model.extras["personas_discovered"] = record
        if assignments is not None:
            csv = discovery.assignments_csv(log, posterior, model.personas)
    if currency is None and mapping is not None:
        currency = load_mapping(mapping).currency
    section = value_section(log, currency)
    if section:
        model.extras["value"] = section
    return Calibration(model=model, assignments_csv=csv)


def _check_assignments(path: str | Path, events: str | Path, personas: str | int | None) -> None:
    if personas is None:
        raise InputError("needs --personas (there are no discovered personas to assign)", where="--assignments",
                         value=str(path), hint="add --personas auto")
    if Path(path).exists() and Path(events).exists() and Path(path).resolve() == Path(events).resolve():
        raise InputError("is the event log itself: it would be overwritten", file=path, where="--assignments",
                         hint="give another file name")
