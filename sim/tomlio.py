"""Reading TOML files with errors the user can act on."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sim.errors import InputError, closest
from sim.limits import loads_toml, read_bytes


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; InputError for an unreadable file or a syntax error."""
    path = Path(path)
    raw = read_bytes(path, "TOML file")  # a regular file of a sane size: a FIFO would block
    try:
        return loads_toml(raw.decode("utf-8-sig"), path)  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError:
        raise InputError("not a text file (TOML expected)", file=path) from None
    except tomllib.TOMLDecodeError as exc:
        if raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):  # e.g. a model JSON where a TOML belongs
            raise InputError("this is JSON, a TOML file is expected here", file=path,
                             hint="a scenario TOML names its model JSON with `model = \"...\"`") from None
        raise InputError(f"TOML syntax error: {exc}", file=path, hint="fix the TOML syntax") from None


def validate(model_cls: type[BaseModel], data: dict[str, Any], file: object) -> Any:
    """Validate ``data`` with pydantic; the first problem becomes one InputError line."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _loc(err["loc"])
        value = err.get("input")
        hint = None
        if err["type"] == "extra_forbidden":
            parent = _fields_at(model_cls, err["loc"][:-1])
            key = str(err["loc"][-1])
            hint = closest(key, parent) if parent else None
            raise InputError("unknown key", file=file, where=loc, value=key, hint=hint) from None
        if err["type"] == "missing":
            raise InputError("required key is missing", file=file, where=loc) from None
        msg = err["msg"].removeprefix("Value error, ")
        shown = value if isinstance(value, (int, float, str, bool)) else None
        raise InputError(msg, file=file, where=loc, value=shown) from None


def _loc(parts: tuple) -> str:
    """('change', 0, 'drop_off') -> 'change[0].drop_off', like the messages of sim.scenario.apply."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _fields_at(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Valid key names at a location inside a pydantic model (for 'did you mean')."""
    cls: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for arg in (getattr(ann, "__args__", None) or (ann,)):
            inner = getattr(arg, "__args__", None)
            for cand in (inner or (arg,)):
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    cls = cand
                    break
    return list(getattr(cls, "model_fields", {}).keys())
