"""Where the shipped files are (templates, migrations, the default content), and the operator's
own copies that override them."""

from __future__ import annotations

from pathlib import Path

# An installed wheel has them inside the package, in mailer/_shipped/ (setup.py copies them in
# when the wheel is built); a checkout, and so an editable install, has them at its top level.
_PACKAGED = Path(__file__).resolve().parent / "_shipped"
SHIPPED = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    """The shipped folder `name`: "templates", "migrations" or "content"."""
    return SHIPPED / name


def template_dirs(templates_path: Path | None) -> list[Path]:
    """Where templates are looked up, in order: the operator's copy (MAILER_TEMPLATES_PATH),
    then the shipped templates, so a file not copied is taken from the shipped ones."""
    return [*([templates_path] if templates_path else []), shipped("templates")]


def content_dirs(content_path: Path | None) -> list[Path]:
    """Where content files are looked up, in order: MAILER_CONTENT_PATH, then the shipped content
    (a file, or the magnets/ and sequences/ folders whole: see content.files.load_content)."""
    return [*([content_path] if content_path else []), shipped("content")]
