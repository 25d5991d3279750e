"""The event log as integer-coded arrays (`EventLog`), and the stage list it is read against."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.errors import InputError, closest
from sim.limits import MAX_STAGES
from sim.model import DEFAULT_STAGES

REQUIRED = ("customer_id", "timestamp", "touchpoint", "stage")
OPTIONAL = ("persona", "satisfaction", "value")


@dataclass
class EventLog:
    """Rows sorted by customer, then time (file order kept for ties)."""

    customer: np.ndarray  # [n] int64 customer code
    time: np.ndarray  # [n] float64 days since 1970-01-01 UTC
    touchpoint: np.ndarray  # [n] int32 touchpoint code
    stage: np.ndarray  # [n] int16 customer's stage after the row (highest reached so far)
    row: np.ndarray  # [n] int64 data-row number in the file (1 = first row after the header)
    persona_of_customer: np.ndarray  # [c] int32
    customer_ids: np.ndarray  # [c] original ids (strings)
    touchpoints: list[str]
    stages: list[str]
    personas: list[str]
    conversion_stage: str
    source: str
    sha256: str
    end: float  # last timestamp of the log, days
    backward_rows: int = 0
    satisfaction: np.ndarray | None = None  # [n] float, NaN where missing
    value: np.ndarray | None = None  # [n] float >= 0: money the row realised (empty cell = 0)
    notes: dict = field(default_factory=dict)
    ended: np.ndarray | None = None  # [c] bool: journey ended by a mapping's [stage] end_values row

    @property
    def n_rows(self) -> int:
        """Rows of the log."""
        return int(self.customer.size)

    @property
    def n_customers(self) -> int:
        """Distinct customers."""
        return int(self.customer_ids.size)

    @property
    def conversion_index(self) -> int:
        """Index of the conversion stage in ``stages``."""
        return self.stages.index(self.conversion_stage)


def parse_stages(stages: str | list[str] | None, conversion_stage: str | None) -> tuple[list[str], str]:
    """The stage names and the conversion stage, checked (``--stages``, ``--conversion-stage``)."""
    if stages is None:
        names = list(DEFAULT_STAGES)
    elif isinstance(stages, str):
        names = [s.strip() for s in stages.split(",") if s.strip()]
    else:
        names = list(stages)
    if len(names) > MAX_STAGES:
        raise InputError(f"at most {MAX_STAGES:,} stages", where="--stages", value=len(names))
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError("need at least two distinct stage names", where="--stages", value=",".join(names),
                         hint="e.g. --stages awareness,consideration,decision")
    conv = conversion_stage or ("decision" if "decision" in names else names[-1])
    if conv not in names:
        raise InputError("conversion stage is not in the stage list", where="--conversion-stage", value=conv,
                         hint=closest(conv, names))
    if conv == names[0]:
        raise InputError("the conversion stage cannot be the first stage", where="--conversion-stage", value=conv)
    return names, conv
