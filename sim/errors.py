"""Exception hierarchy: everything the user can fix is an InputError (exit 2)."""
from __future__ import annotations


class JourneyError(Exception):
    """Base class of every error raised on purpose by journey."""


class InputError(JourneyError):
    """Bad input the user can fix: names the file, the row/key, the value and a hint.

    ``str(err)`` is the one line the CLI prints.
    """

    def __init__(self, message: str, *, file: object = None, where: str | None = None,
                 value: object = None, hint: str | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.where = where
        self.value = value
        self.hint = hint
        self.message = message
        super().__init__(self._line())

    def _line(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.where:
            parts.append(self.where)
        head = ": ".join(parts)
        text = f"{head}: {_clip(self.message, 300)}" if head else _clip(self.message, 300)
        if self.value is not None:
            text += f" (got {_clip(repr(self.value), 120)})"
        if self.hint:
            text += f"; {self.hint}"
        # always one printable line: bytes from a garbage file must not reach the terminal raw
        return "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ModelError(InputError):
    """A model file that cannot be used (foreign, truncated, unknown schema version)."""


def closest(value: str, options) -> str:
    """' (did you mean X?)' for the closest option, or a list of the valid ones."""
    import difflib

    options = [str(o) for o in options]
    match = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
    if match:
        return f"did you mean {match[0]!r}?"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f"valid: {shown}"
