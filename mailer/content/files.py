"""Content as files: the organisation, its privacy notice and statement, the lead magnets,
their sequences and the newsletters (content/newsletters.py).

Loaded and checked once at start-up; a bad file stops the service with an error that
names the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from mailer.content.fields import Fields as _Fields
from mailer.content.newsletters import Newsletter, load_newsletter
from mailer.errors import ContentError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,98}$")


@dataclass(frozen=True)
class MailText:
    subject: str
    intro: str
    button: str
    outro: str = ""


@dataclass(frozen=True)
class Magnet:
    slug: str
    title: str
    file: Path
    download_name: str
    link_max_age_days: int
    heading: str
    intro: str
    points: tuple[str, ...]
    button: str
    confirm_mail: MailText
    guide_mail: MailText
    consent_mail: MailText  # to a confirmed lead who ticks the marketing box on a later signup

    @property
    def link_max_age_seconds(self) -> int:
        return self.link_max_age_days * 86400


@dataclass(frozen=True)
class Notice:
    """What a visitor is told with the form: the label of the marketing box, the short notice
    under it, and the privacy statement it links to, as /privacy shows it (its figures filled
    in). The whole is stored with its hash as the consent evidence (store/queries.notice_id)."""

    version: str
    marketing_label: str
    text: str
    statement: str = ""  # PrivacyStatement.text

    @property
    def full_text(self) -> str:
        return "\n\n".join(part for part in (self.marketing_label, self.text, self.statement) if part)


@dataclass(frozen=True)
class Block:
    """A part of the privacy statement: a heading ("h2", "h3"), a paragraph ("p") or a list ("ul")."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrivacyStatement:
    """The privacy statement (/privacy) from privacy.md, its {placeholders} filled in."""

    title: str
    blocks: tuple[Block, ...]

    @property
    def text(self) -> str:
        """The statement as a visitor reads it, in plain text: part of the consent evidence."""
        parts = [self.title]
        for block in self.blocks:
            parts.append("\n".join(f"- {item}" for item in block.items) if block.kind == "ul" else block.text)
        return "\n\n".join(parts)


@dataclass(frozen=True)
class Organisation:
    name: str
    postal_address: str
    website: str
    privacy_contact: str
    default_magnet: str
    notice: Notice
    links: dict[str, str] = field(default_factory=dict)  # name -> URL, for link('name') in mails
    processors: tuple[str, ...] = ()  # who processes the data on the operator's behalf ([privacy])


# What a step's skip_if may name; evaluated when the step falls due (see drip/job.py).
CONDITIONS = ("downloaded", "not-downloaded", "clicked", "not-clicked")


@dataclass(frozen=True)
class Step:
    key: str  # stable identity: a lead gets each key at most once
    delay: timedelta  # after the confirmation
    subject: str
    template: str  # templates/mail/drip/TEMPLATE.html and .txt
    skip_if: str | None = None

    @property
    def delay_seconds(self) -> int:
        return int(self.delay.total_seconds())


@dataclass(frozen=True)
class Sequence:
    slug: str
    magnet: str
    name: str
    steps: tuple[Step, ...]  # in sending order: strictly growing delays

    def step(self, key: str) -> Step | None:
        return next((s for s in self.steps if s.key == key), None)

    def next_after(self, position: int) -> Step | None:
        """The first step later in sequence time than `position` (seconds), if any."""
        return next((s for s in self.steps if s.delay_seconds > position), None)


@dataclass(frozen=True)
class Content:
    organisation: Organisation
    magnets: dict[str, Magnet]
    sequences: dict[str, Sequence] = field(default_factory=dict)
    privacy: PrivacyStatement | None = None
    newsletters: dict[str, Newsletter] = field(default_factory=dict)  # newsletters/SLUG.md

    @property
    def default_magnet(self) -> Magnet:
        return self.magnets[self.organisation.default_magnet]

    def sequence_for(self, magnet: str) -> Sequence | None:
        """The sequence a lead of this magnet enters on confirming with marketing consent."""
        return next((s for s in self.sequences.values() if s.magnet == magnet), None)


def load_content(roots: Path | list[Path], settings=None) -> Content:
    """Load and check the content. With several roots (the operator's copy first, then the
    shipped content), organisation.toml, privacy.md and a magnet's PDF are taken from the first
    root that has them; magnets/ and sequences/ from the first root that has that folder, whole,
    so a magnet or sequence deleted from the copy is gone rather than taken from the shipped files.

    The privacy statement quotes retention figures from `settings` (the Settings that enforce
    them; their defaults when None), so what it says and what the service does cannot drift."""
    layers = _Layers([roots] if isinstance(roots, Path) else list(roots))
    magnets = {}
    for path in layers.glob("magnets"):
        magnet = _load_magnet(path, layers)
        magnets[magnet.slug] = magnet
    organisation_file = layers.find("organisation.toml")
    organisation = _load_organisation(organisation_file)
    if not magnets:
        raise ContentError(f"{layers.first / 'magnets'}: no lead magnet (*.toml) found")
    if organisation.default_magnet not in magnets:
        raise ContentError(
            f"{organisation_file}: default_magnet {organisation.default_magnet!r} "
            f"is not one of {', '.join(magnets)}"
        )
    sequences: dict[str, Sequence] = {}
    for path in layers.glob("sequences"):
        sequence = _load_sequence(path, magnets)
        taken = next((s for s in sequences.values() if s.magnet == sequence.magnet), None)
        if taken:
            raise ContentError(f"{path}: magnet {sequence.magnet!r} already has the sequence {taken.slug!r}; "
                               "a magnet has one sequence")
        sequences[sequence.slug] = sequence
    statement = _load_statement(layers.find(STATEMENT_FILE), _statement_values(organisation, magnets, settings))
    organisation = replace(organisation, notice=replace(organisation.notice, statement=statement.text))
    newsletters = {path.stem: load_newsletter(path, organisation.links, magnets)
                   for path in layers.glob("newsletters", "*.md")}
    return Content(organisation, magnets, sequences, statement, newsletters)


class _Layers:
    """Content folders in order of precedence: a file in an earlier one hides the same file
    (by its path inside the folder) in a later one, and a listed folder (magnets/, sequences/)
    hides the same folder."""

    def __init__(self, roots: list[Path]):
        self.roots = roots
        self.first = roots[0]

    def find(self, relative: str | Path) -> Path:
        """The first root's copy of a file, or the path it would have in the first root."""
        for root in self.roots:
            candidate = (root / relative).resolve()
            if candidate.exists():
                return candidate
        return (self.first / relative).resolve()

    def glob(self, folder: str, pattern: str = "*.toml") -> list[Path]:
        """The files of `folder` (*.toml) in the first root that has that folder, sorted by name."""
        for root in self.roots:
            if (root / folder).is_dir():
                return sorted((root / folder).glob(pattern))
        return []

    def beside(self, path: Path, relative: str) -> Path:
        """A file named relative to the folder of `path` (a magnet's PDF): from the first root
        that has it at that place, so a copied magnet file can keep pointing at the shipped PDF."""
        for root in self.roots:
            try:
                inside = path.parent.resolve().relative_to(root.resolve())
            except ValueError:
                continue
            return self.find(inside / relative)
        return (path.parent / relative).resolve()


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ContentError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ContentError(f"{path}: not valid TOML: {exc}") from None


def _load_magnet(path: Path, layers: _Layers) -> Magnet:
    fields = _Fields(path, _read_toml(path))
    slug = path.stem
    if not SLUG.match(slug):
        raise ContentError(f"{path}: the file name must be a slug (lowercase letters, digits, dashes)")
    pdf = layers.beside(path, fields.text("file"))
    if not pdf.is_file():
        raise fields.fail("file", f"points to {pdf}, which does not exist")
    with pdf.open("rb") as handle:
        if handle.read(5) != b"%PDF-":
            raise fields.fail("file", f"points to {pdf}, which is not a PDF")
    landing, mail = fields.table("landing"), fields.table("mail")
    return Magnet(
        slug=slug,
        title=fields.text("title"),
        file=pdf,
        download_name=fields.text("download_name", f"{slug}.pdf"),
        link_max_age_days=fields.number("link_max_age_days", 30),
        heading=landing.text("heading"),
        intro=landing.text("intro"),
        points=landing.texts("points"),
        button=landing.text("button"),
        confirm_mail=_mail_text(mail.table("confirm")),
        guide_mail=_mail_text(mail.table("guide")),
        consent_mail=_mail_text(mail.table("consent")),
    )


def _mail_text(fields: _Fields) -> MailText:
    return MailText(
        subject=fields.text("subject"),
        intro=fields.text("intro"),
        button=fields.text("button"),
        outro=fields.text("outro", "-") if "outro" in fields.data else "",
    )


SEQUENCE_FIELDS = {"magnet", "name", "steps"}
STEP_FIELDS = {"key", "days", "hours", "subject", "template", "skip_if"}


def _load_sequence(path: Path, magnets: dict[str, Magnet]) -> Sequence:
    fields = _Fields(path, _read_toml(path))
    fields.only(SEQUENCE_FIELDS)
    if not SLUG.match(path.stem):
        raise ContentError(f"{path}: the file name must be a slug (lowercase letters, digits, dashes)")
    magnet = fields.text("magnet")
    if magnet not in magnets:
        raise fields.fail("magnet", f"names {magnet!r}, which is not one of {', '.join(magnets)}")
    raw_steps = fields.data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps or not all(isinstance(s, dict) for s in raw_steps):
        raise fields.fail("steps", "must hold at least one [[steps]] table")
    steps: list[Step] = []
    for number, raw in enumerate(raw_steps, 1):
        step_fields = _Fields(path, raw, f"steps[{number}].")
        key = step_fields.text("key")
        where = _Fields(path, raw, f"steps[{number}] ({key}).")
        where.only(STEP_FIELDS)  # a typo such as `hour` or `skipif` must not pass silently
        if not SLUG.match(key):
            raise where.fail("key", "must be a slug (lowercase letters, digits, dashes)")
        if any(s.key == key for s in steps):
            raise where.fail("key", "is used by an earlier step; keys identify steps and must be unique")
        delay = timedelta(days=where.count("days"), hours=where.count("hours"))
        if delay <= timedelta(0):
            raise where.fail("days", "and hours together must be more than zero (the guide itself goes out at once)")
        if steps and delay <= steps[-1].delay:
            raise where.fail("days", f"and hours must come after the step before it ({steps[-1].key!r}, "
                                     f"{_delay_text(steps[-1].delay)}): steps are listed in the order they are sent")
        skip_if = raw.get("skip_if")
        if skip_if is not None and skip_if not in CONDITIONS:
            raise where.fail("skip_if", f"must be one of {', '.join(CONDITIONS)}, got {skip_if!r}")
        template = where.text("template")
        if ".." in template.split("/") or template.startswith("/"):
            raise where.fail("template", "must be a path inside templates/mail/drip/")
        steps.append(Step(key, delay, where.text("subject"), template, skip_if))
    return Sequence(path.stem, magnet, fields.text("name"), tuple(steps))


def _delay_text(delay: timedelta) -> str:
    hours = delay.seconds // 3600
    return f"day {delay.days}" + (f" + {hours} h" if hours else "")


def _load_organisation(path: Path) -> Organisation:
    fields = _Fields(path, _read_toml(path))
    privacy = fields.table("privacy")
    links = fields.data.get("links", {})
    if not isinstance(links, dict) or not all(
        SLUG.match(k) and isinstance(v, str) and v.startswith(("https://", "http://")) for k, v in links.items()
    ):
        raise fields.fail("links", "must be a table of lines like name = \"https://...\" (names: "
                                   "lowercase letters, digits, dashes)")
    processors = privacy.texts("processors")
    if not processors:
        raise privacy.fail("processors", "must name at least one processor: who handles the data for you, "
                                         "such as the mail relay (a list of texts)")
    return Organisation(
        name=fields.text("name"),
        postal_address=fields.text("postal_address"),
        website=fields.text("website"),
        privacy_contact=fields.text("privacy_contact"),
        default_magnet=fields.text("default_magnet"),
        notice=Notice(
            version=privacy.text("version"),
            marketing_label=privacy.text("marketing_label"),
            text=privacy.text("notice"),
        ),
        links=dict(links),
        processors=tuple(" ".join(p.split()) for p in processors),
    )


# The privacy statement: a small part of Markdown (a "# " title, "## " and "### " headings,
# paragraphs, "- " lists, <!-- comments --> on lines of their own) with {placeholders}.
STATEMENT_FILE = "privacy.md"
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
DEFAULT_TITLE = "Privacyverklaring"


def _statement_values(organisation: Organisation, magnets: dict[str, Magnet], settings) -> dict[str, str | tuple]:
    """What the statement's {placeholders} may name: the organisation, and the retention figures
    from the settings and the magnets that enforce them. A tuple is a list: "A, B en C" inside
    a sentence, one item each as a list item of its own ("- {processors}")."""
    if settings is None:
        from mailer.settings import Settings

        settings = Settings  # the class: its fields' defaults
    lifetimes = sorted({m.link_max_age_days for m in magnets.values()})
    notice = organisation.notice
    return {
        "organisation": organisation.name,
        "postal_address": organisation.postal_address,
        "website": organisation.website,
        "privacy_contact": organisation.privacy_contact,
        "processors": organisation.processors,
        "version": notice.version,
        "marketing_label": notice.marketing_label,
        "pending_max_age_days": str(settings.pending_max_age_days),
        "confirm_max_age_days": str(settings.confirm_max_age_days),
        # One figure, or the range when magnets differ ("14 tot 30").
        "link_max_age_days": str(lifetimes[0]) if len(lifetimes) == 1 else f"{lifetimes[0]} tot {lifetimes[-1]}",
    }


def _dutch_list(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " en " + items[-1]


def _load_statement(path: Path, values: dict[str, str | tuple]) -> PrivacyStatement:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ContentError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ContentError(f"{path}: not UTF-8 text") from None

    def fill(number: int, line: str) -> str:
        def value(match: re.Match) -> str:
            if match[1] not in values:
                raise ContentError(f"{path}: line {number}: unknown placeholder {match[0]} "
                                   f"(known: {', '.join('{' + name + '}' for name in values)})")
            found = values[match[1]]
            return _dutch_list(found) if isinstance(found, tuple) else found
        return PLACEHOLDER.sub(value, line)

    title: str | None = None
    blocks: list[Block] = []
    paragraph: list[str] = []
    items: list[str] = []
    in_comment = False

    def flush() -> None:
        if paragraph:
            blocks.append(Block("p", " ".join(paragraph)))
            paragraph.clear()
        if items:
            blocks.append(Block("ul", items=tuple(items)))
            items.clear()

    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if in_comment or stripped.startswith("<!--"):
            in_comment = "-->" not in stripped
            continue
        line = " ".join(fill(number, stripped).split())
        if not line:
            flush()
        elif line.startswith("# "):
            if title is not None or blocks or paragraph or items:
                raise ContentError(f"{path}: line {number}: a '# ' title comes once, at the top; "
                                   "use '## ' for a section")
            title = line[2:].strip()
        elif line.startswith(("## ", "### ")):
            flush()
            level, _, heading = line.partition(" ")
            blocks.append(Block(f"h{len(level)}", heading.strip()))
        elif line.startswith(("- ", "* ")):
            if paragraph:
                flush()
            whole = PLACEHOLDER.fullmatch(stripped[2:].strip())
            if whole and isinstance(values.get(whole[1]), tuple):
                items.extend(values[whole[1]])  # "- {processors}": an item each
            else:
                items.append(line[2:].strip())
        elif items:  # a continued list item
            items[-1] += " " + line
        else:
            paragraph.append(line)
    flush()
    if in_comment:
        raise ContentError(f"{path}: a comment (<!--) is not closed (-->)")
    if not blocks:
        raise ContentError(f"{path}: the privacy statement is empty")
    return PrivacyStatement(title or DEFAULT_TITLE, tuple(blocks))
