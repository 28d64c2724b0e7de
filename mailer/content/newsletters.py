"""Newsletters as files: `newsletters/SLUG.md`, a TOML header between `+++` lines and a
Markdown body (see docs/newsletters.md).

Loading checks the header and the named links without parsing the Markdown (markdown-it is
imported only where a newsletter is rendered: content/markdown.py), so commands that only load
the content (export, stats) stay light.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from email.utils import parseaddr
from pathlib import Path

from mailer.content.fields import Fields
from mailer.errors import ContentError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,98}$")
FENCE = "+++"
# A newsletter's clicks are recorded under this "sequence" (no sequence slug has a colon).
CLICK_SEQUENCE_PREFIX = "newsletter:"
# Plain links of a newsletter are tracked under these names, numbered in order of appearance.
PLAIN_LINK = re.compile(r"^url-([1-9][0-9]*)$")
NAMED_LINK = re.compile(r"""link\(\s*['"]([^'"]*)['"]\s*\)""")

HEADER_FIELDS = {"subject", "preheader", "public", "from", "reply_to", "audience"}
AUDIENCE_FIELDS = {"magnet", "signed_up_after", "signed_up_before", "downloaded", "clicked", "not_clicked",
                   "sequence"}
SEQUENCE_STATES = ("in", "finished")


def click_sequence(slug: str) -> str:
    return f"{CLICK_SEQUENCE_PREFIX}{slug}"


@dataclass(frozen=True)
class Audience:
    """Filters on top of "confirmed, with marketing consent"; each one narrows (AND)."""

    magnets: tuple[str, ...] = ()  # signed up for one of these lead magnets
    signed_up_after: date | None = None  # signed up on this day or later (the send window's time zone)
    signed_up_before: date | None = None  # signed up before this day
    downloaded: bool | None = None  # downloaded the guide (True) or never (False)
    clicked: tuple[str, ...] = ()  # clicked each of these named links (in any mail)
    not_clicked: tuple[str, ...] = ()  # clicked none of these
    sequence: str | None = None  # "in": still in the follow-up sequence; "finished": every step handled

    def describe(self) -> list[str]:
        parts = []
        if self.magnets:
            parts.append(f"magnet {' or '.join(self.magnets)}")
        if self.signed_up_after:
            parts.append(f"signed up on or after {self.signed_up_after.isoformat()}")
        if self.signed_up_before:
            parts.append(f"signed up before {self.signed_up_before.isoformat()}")
        if self.downloaded is not None:
            parts.append("downloaded the guide" if self.downloaded else "never downloaded the guide")
        parts += [f"clicked {name}" for name in self.clicked]
        parts += [f"never clicked {name}" for name in self.not_clicked]
        if self.sequence:
            parts.append("in the follow-up sequence" if self.sequence == "in" else "finished the follow-up sequence")
        return parts


@dataclass(frozen=True)
class Newsletter:
    slug: str
    path: Path
    subject: str
    preheader: str
    public: bool
    body: str  # Markdown
    sender: str | None = None  # From, instead of MAILER_MARKETING_FROM
    reply_to: str | None = None  # Reply-To, instead of MAILER_REPLY_TO
    audience: Audience = field(default_factory=Audience)

    @property
    def click_sequence(self) -> str:
        return click_sequence(self.slug)


def split(path: Path, text: str) -> tuple[str, str]:
    """The TOML header and the Markdown body."""
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise ContentError(f"{path}: must start with a line '+++', then the header (TOML), then '+++' and the text")
    for number, line in enumerate(lines[1:], 1):
        if line.strip() == FENCE:
            return "".join(lines[1:number]), "".join(lines[number + 1:])
    raise ContentError(f"{path}: the header has no closing line '+++'")


def load_newsletter(path: Path, organisation_links: dict[str, str], magnets) -> Newsletter:
    """One newsletter file, checked; ContentError naming the file and the field."""
    if not SLUG.match(path.stem):
        raise ContentError(f"{path}: the file name must be a slug (lowercase letters, digits, dashes) and .md")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContentError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ContentError(f"{path}: not UTF-8 text") from None
    header, body = split(path, text)
    try:
        data = tomllib.loads(header)
    except tomllib.TOMLDecodeError as exc:
        raise ContentError(f"{path}: the header is not valid TOML: {exc}") from None
    fields = Fields(path, data)
    fields.only(HEADER_FIELDS)
    public = data.get("public")
    if not isinstance(public, bool):
        raise fields.fail("public", "must be true or false (whether the newsletter may be shown publicly)")
    addresses = {name: _address(fields, name) for name in ("from", "reply_to")}
    if not body.strip():
        raise fields.fail("body", "is empty: write the newsletter's text (Markdown) after the closing '+++'")
    for name in NAMED_LINK.findall(body):
        if PLAIN_LINK.match(name):
            raise fields.fail("body", f"link({name!r}): names like url-1 are kept for plain links")
        if name not in organisation_links:
            raise fields.fail("body", f"link({name!r}) is not one of the [links] in organisation.toml "
                                      f"({', '.join(organisation_links) or 'none defined'})")
    audience = _audience(fields, organisation_links, magnets) if "audience" in data else Audience()
    return Newsletter(path.stem, path, fields.text("subject"), fields.text("preheader"), public, body.strip() + "\n",
                      addresses["from"], addresses["reply_to"], audience)


def _address(fields, name: str) -> str | None:
    if name not in fields.data:
        return None
    value = fields.text(name)
    if "@" not in parseaddr(value)[1]:
        raise fields.fail(name, f"must be an e-mail address, such as \"Naam <naam@example.nl>\"; got {value!r}")
    return value


def _audience(fields, organisation_links: dict[str, str], magnets) -> Audience:
    table = fields.table("audience")
    table.only(AUDIENCE_FIELDS)
    data = table.data

    def names(name: str) -> tuple[str, ...]:
        value = data.get(name, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise table.fail(name, "must be a text or a list of texts")
        return tuple(v.strip() for v in value)

    def day(name: str) -> date | None:
        value = data.get(name)
        if value is None or (isinstance(value, date) and not hasattr(value, "hour")):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise table.fail(name, f"must be a date such as 2026-12-01, got {value!r}")

    magnet_names = names("magnet")
    for name in magnet_names:
        if name not in magnets:
            raise table.fail("magnet", f"names {name!r}, which is not one of {', '.join(magnets)}")
    clicked, not_clicked = names("clicked"), names("not_clicked")
    for name, links in (("clicked", clicked), ("not_clicked", not_clicked)):
        for link in links:
            if link not in organisation_links:
                raise table.fail(name, f"names {link!r}, which is not one of the [links] in organisation.toml")
    downloaded = data.get("downloaded")
    if downloaded is not None and not isinstance(downloaded, bool):
        raise table.fail("downloaded", "must be true or false")
    sequence = data.get("sequence")
    if sequence is not None and sequence not in SEQUENCE_STATES:
        raise table.fail("sequence", f"must be one of {', '.join(SEQUENCE_STATES)}, got {sequence!r}")
    after, before = day("signed_up_after"), day("signed_up_before")
    if after and before and before <= after:
        raise table.fail("signed_up_before", "must be later than signed_up_after")
    return Audience(magnet_names, after, before, downloaded, clicked, not_clicked, sequence)


def starter(slug: str, organisation_links: dict[str, str]) -> str:
    """The text `mailer newsletter new` writes: valid as it stands (its example of a named
    link uses one the organisation has)."""
    named = next(iter(organisation_links), None)
    example = (f"Een link naar een van de [links] uit organisation.toml schrijf je zo: [{named}](link('{named}'))."
               if named else "Wie in organisation.toml [links] zet, linkt ernaar met [tekst](link(...)) en de naam.")
    return f'''+++
# The newsletter "{slug}". The text below the second +++ line is Markdown.
subject = "Nieuws van het trainingsbureau"
# The preview line in the inbox, after the subject (keep it different from the subject).
preheader = "Wat er deze maand speelt, en een uitnodiging."
# true: may be shown in the public archive once sent.
public = false
# Optional: another sender or reply address than MAILER_MARKETING_FROM / MAILER_REPLY_TO.
# from = "Naam <naam@example.nl>"
# reply_to = "naam@example.nl"

# Who gets it: always confirmed leads with marketing consent, narrowed by these filters
# (leave them out for everyone). See docs/newsletters.md.
[audience]
# magnet = "mini-guide"
# signed_up_after = 2026-01-01
# signed_up_before = 2026-12-01
# downloaded = true
# clicked = "naam van een link"
# not_clicked = ["naam van een link"]
# sequence = "finished"   # or "in"
+++
The mail opens with "Hallo <voornaam>," and closes with the organisation's greeting; write
what comes between.

## Wat er speelt

Schrijf hier je nieuws. {example}
Een gewone link kan ook: [voorbeeld](https://www.example.nl/).

- een opsomming
- met **nadruk** waar nodig

Een alinea die alleen een link is, wordt een knop:

[Bekijk onze trainingen](https://www.example.nl/)
'''
