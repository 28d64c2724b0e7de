"""Typed fields from parsed TOML, every error naming the file and the field."""

from __future__ import annotations

from pathlib import Path

from mailer.errors import ContentError


class Fields:
    """Reads typed fields from a parsed TOML table, naming file and field in every error."""

    def __init__(self, path: Path, data: dict, prefix: str = ""):
        self.path, self.data, self.prefix = path, data, prefix

    def fail(self, name: str, problem: str) -> ContentError:
        return ContentError(f"{self.path}: field '{self.prefix}{name}' {problem}")

    def text(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "must be a non-empty text")
        return " ".join(value.split()) if "\n" in value else value.strip()

    def number(self, name: str, default: int) -> int:
        value = self.data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(name, "must be a whole number of at least 1")
        return value

    def only(self, known: set[str]) -> None:
        unknown = sorted(set(self.data) - known)
        if unknown:
            raise self.fail(unknown[0], f"is not a known field (known: {', '.join(sorted(known))})")

    def count(self, name: str) -> int:
        """A whole number of zero or more; absent means zero."""
        value = self.data.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(name, "must be a whole number of zero or more")
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(name, "must be a list of texts")
        return tuple(value)

    def table(self, name: str) -> "Fields":
        value = self.data.get(name)
        if not isinstance(value, dict):
            raise self.fail(name, "is missing (a [section] is expected)")
        return Fields(self.path, value, f"{self.prefix}{name}.")
