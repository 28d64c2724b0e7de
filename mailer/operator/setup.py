"""`mailer init DIR`: an editable copy of the shipped content and templates for an operator.

The installed package is never edited: the copy goes to DIR/content/ and DIR/templates/, and
MAILER_CONTENT_PATH and MAILER_TEMPLATES_PATH point the service at it. Each file is looked up
in the copy first and in the shipped files after, so a file deleted from the copy is taken from
the package again (and gets its updates).
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from mailer.errors import MailerError
from mailer.resources import shipped

COPIES = ("content", "templates")  # the shipped folders an operator gets a copy of


class CopyRefused(MailerError):
    """The target already holds a copy (or something else); nothing was written."""


@dataclass(frozen=True)
class Copied:
    content: Path  # DIR/content, absolute
    templates: Path  # DIR/templates, absolute
    files: tuple[Path, ...]  # every file written, absolute, sorted

    def count(self, folder: Path) -> int:
        return sum(1 for f in self.files if f.is_relative_to(folder))

    @property
    def settings(self) -> tuple[str, str]:
        """The two lines for .env or the service's environment."""
        return (f"MAILER_CONTENT_PATH={shlex.quote(str(self.content))}",
                f"MAILER_TEMPLATES_PATH={shlex.quote(str(self.templates))}")


def copy_for_editing(target: Path) -> Copied:
    """Copy the shipped content to target/content and the mail and page templates to
    target/templates. Refuses, writing nothing, if either already exists and is not an empty
    folder: an operator's edits are never overwritten."""
    target = Path(target).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise CopyRefused(f"{target} is not a folder")
    for name in COPIES:
        if not shipped(name).is_dir():  # a wheel built without setup.py's copying step
            raise MailerError(f"the shipped {name} are missing from the installed package ({shipped(name)})")
        folder = target / name
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise CopyRefused(f"{folder} already exists and is not empty; nothing was written. "
                              "Choose another folder, or move it aside to start again from the shipped files")
    written = []
    for name in COPIES:
        source = shipped(name)
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if not path.is_file() or _ignored(relative):
                continue
            copy = target / name / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            # Contents only: the installed files may be read-only, the copy is for editing.
            shutil.copyfile(path, copy)
            written.append(copy)
    return Copied(target / "content", target / "templates", tuple(written))


def _ignored(relative: Path) -> bool:
    return any(part == "__pycache__" or part.startswith(".") for part in relative.parts) \
        or relative.suffix in (".pyc", ".pyo")
