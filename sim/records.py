"""Records: the dataclasses commands return, whose fields in order are their JSON's keys."""
from __future__ import annotations

from dataclasses import fields
from typing import Any


class Record:
    """A dataclass mixin: ``to_dict()`` is its fields in order (records that add or leave out keys
    start from ``fields_dict()``)."""

    def fields_dict(self) -> dict[str, Any]:
        """Every field by name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The record as written in its JSON."""
        return self.fields_dict()
