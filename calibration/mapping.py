"""`--mapping FILE.toml`: map a foreign event log onto the contract's columns."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sim.tomlio import read_toml, validate


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: str | None = None
    timestamp: str | None = None
    touchpoint: str | None = None
    stage: str | None = None
    persona: str | None = None
    satisfaction: str | None = None


class StageRule(BaseModel):
    """Derive `stage` from a column's values; other rows keep the customer's current stage."""

    model_config = ConfigDict(extra="forbid")
    column: str
    values: dict[str, str] = Field(default_factory=dict)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drop_duplicates: bool = False


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    columns: Columns = Field(default_factory=Columns)
    filter: dict[str, str | int | float | bool] = Field(default_factory=dict)
    stage: StageRule | None = None
    options: Options = Field(default_factory=Options)

    def source_of(self, name: str) -> str:
        """The user's column behind a contract column."""
        return getattr(self.columns, name) or name


def load_mapping(path: str | Path) -> Mapping:
    return validate(Mapping, read_toml(path), file=path)
