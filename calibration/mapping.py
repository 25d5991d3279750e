"""`--mapping FILE.toml`: map a foreign event log onto the contract's columns.

Every key is documented in docs/mapping.md. Beyond the contract's [columns], [filter] and [stage]:
  * top-level ``stages`` / ``conversion_stage``: defaults for --stages / --conversion-stage;
  * [filter] values may be lists (keep rows equal to any of them);
  * [stage] ``end_values``: values that end the journey at that row (declined, cancelled, ...);
  * [persona]: persona from a column's value on the customer's first row, optionally banded;
  * [timestamp]: how to read timestamps that are not ISO 8601 (format, dayfirst, unit, timezone).
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.errors import closest
from sim.tomlio import read_toml, validate

Scalar = str | int | float | bool


class Columns(BaseModel):
    """The log's column behind each contract column (None: the contract's own name)."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str | None = None
    timestamp: str | None = None
    touchpoint: str | None = None
    stage: str | None = None
    persona: str | None = None
    satisfaction: str | None = None
    value: str | None = None  # money realised by the interaction (docs/whatif.md, "Money")


class StageRule(BaseModel):
    """Derive `stage` from a column's values; other rows keep the customer's current stage."""

    model_config = ConfigDict(extra="forbid")
    column: str
    values: dict[str, str] = Field(default_factory=dict)
    # a row with one of these values ends the journey (drop-off): later rows of the customer are ignored
    end_values: list[str] = Field(default_factory=list)


class PersonaRule(BaseModel):
    """Persona from ``column`` on the customer's first row; numeric bands when ``bands`` is given."""

    model_config = ConfigDict(extra="forbid")
    column: str
    bands: list[float] | None = None  # lower edges, increasing: value in [bands[i], bands[i+1]) -> labels[i]
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _bands_match_labels(self) -> PersonaRule:
        if (self.bands is None) != (self.labels is None):
            raise ValueError("give both bands and labels (one label per band), or neither")
        if self.bands is not None:
            if not self.bands:
                raise ValueError("bands must not be empty")
            if len(self.bands) != len(self.labels):
                raise ValueError(f"{len(self.bands)} bands but {len(self.labels)} labels: give one label per band")
            if any(hi <= lo for lo, hi in zip(self.bands, self.bands[1:])):
                raise ValueError("bands must be strictly increasing lower edges, e.g. [0, 5000, 15000]")
            if len(set(self.labels)) != len(self.labels) or any(not x for x in self.labels):
                raise ValueError("labels must be unique and non-empty")
        return self


class TimestampRule(BaseModel):
    """How to read the timestamp column when it is not ISO 8601 (at most one of format, dayfirst, unit)."""

    model_config = ConfigDict(extra="forbid")
    format: str | None = None  # strptime codes, e.g. "%d/%m/%Y %H:%M"; every row must match
    dayfirst: bool | None = None  # true: 01/04/2024 is 1 April; false: 4 January (layout read from the first row)
    unit: Literal["s", "ms", "us", "ns"] | None = None  # epoch numbers (since 1970-01-01 UTC)
    timezone: str | None = None  # zone of timestamps without one (default UTC)

    @model_validator(mode="after")
    def _consistent(self) -> TimestampRule:
        given = [k for k in ("format", "dayfirst", "unit") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of format, dayfirst or unit, not {' and '.join(given)}")
        if self.timezone is not None:
            if self.unit is not None:
                raise ValueError("epoch numbers are UTC: timezone does not apply with unit")
            if self.format is not None and ("%z" in self.format or "%Z" in self.format):
                raise ValueError("the format's %z gives each timestamp's zone: drop timezone")
        return self

    @field_validator("format")
    @classmethod
    def _usable_format(cls, fmt: str | None) -> str | None:
        """Valid codes that fix the date: a known date survives formatting and parsing back."""
        if fmt is None:
            return fmt
        probe = datetime(2024, 4, 17, 13, 45, 30, tzinfo=UTC)  # aware: %z and %Z have a value
        try:
            back = datetime.strptime(probe.strftime(fmt), fmt)
        except ValueError as exc:
            raise ValueError(f"not a usable strptime format ({exc})") from None
        if back.date() != probe.date():
            raise ValueError("the format must give the year, month and day, e.g. \"%d/%m/%Y %H:%M\"")
        return fmt

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is None:
            return name
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            near = closest(name, sorted(available_timezones()))
            raise ValueError("unknown time zone; " + (near if near.startswith("did you mean") else
                                                      "use an IANA name such as Europe/Amsterdam")) from None
        return name


class Options(BaseModel):
    """Loader options."""

    model_config = ConfigDict(extra="forbid")
    drop_duplicates: bool = False


class Mapping(BaseModel):
    """A mapping file: how a foreign log maps onto the contract's columns."""

    model_config = ConfigDict(extra="forbid")
    stages: list[str] | None = None  # default stage order when --stages is not given
    conversion_stage: str | None = None  # default when --conversion-stage is not given
    currency: str | None = Field(default=None, min_length=1, max_length=12)  # of the value column (--currency)
    columns: Columns = Field(default_factory=Columns)
    filter: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    stage: StageRule | None = None
    persona: PersonaRule | None = None
    timestamp: TimestampRule | None = None
    options: Options = Field(default_factory=Options)

    @model_validator(mode="after")
    def _one_persona_source(self) -> Mapping:
        if self.persona is not None and self.columns.persona is not None:
            raise ValueError("give the persona either as [columns] persona or as a [persona] table, not both")
        return self

    def source_of(self, name: str) -> str:
        """The user's column behind a contract column."""
        return getattr(self.columns, name) or name

    def filter_values(self, column: str) -> list[str]:
        """The values a [filter] column may take, as strings."""
        value = self.filter[column]
        values = value if isinstance(value, list) else [value]
        return [text for v in values for text in _texts(v)]


def _texts(value: Scalar) -> list[str]:
    """How a TOML value may be spelt in a CSV cell."""
    if isinstance(value, bool):
        return ["true", "True", "TRUE", "1"] if value else ["false", "False", "FALSE", "0"]
    if isinstance(value, float) and value.is_integer():
        return [str(value), str(int(value))]
    return [str(value)]


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping TOML file."""
    return validate(Mapping, read_toml(path), file=path)
