"""Build the lead-magnet PDF mini-guide from its Markdown source.

Reads ``mini-guide.md`` and writes ``mini-guide.pdf``, both in the same
folder as this script, using fpdf2. Run it from anywhere with:

    python content/guides/build_guide.py

The names come from the content files beside this folder, so the PDF says what
the page and the mails say: the title must be the magnet's ``title`` in
``../magnets/<name of the source>.toml`` (the build stops if they differ), and
``../organisation.toml`` gives the organisation's ``name`` (author, cover,
footer), its ``website`` and the addresses of its ``[links]``. In the source:

* ``{organisation}`` -- the organisation's name;
* ``{website}`` -- its website, shown without ``https://``;
* ``{link:NAME}`` -- the address of ``NAME`` in ``[links]``, as a clickable link.

An operator's copy (``mailer init``) rebuilds with its own names the same way.

Only a small Markdown subset is supported:

* Paragraphs before the title -- a short label above the title on the cover.
* ``# Title`` -- the guide title (exactly one);
  the first paragraph after it becomes the cover subtitle and any further
  paragraphs before the first section are printed at the foot of the cover.
* ``## Heading`` -- a section heading; the last section starts on a new
  page so it forms a closing page.
* Plain paragraphs, separated by blank lines.
* ``- item`` bullet lists.
* ``**bold**`` inline, in paragraphs and bullet items.

The PDF uses the standard Helvetica font with Windows-1252 encoding, so no
font file is embedded: the output does not depend on the fonts installed on
the build machine, Dutch accented letters and typographic quotes and dashes
(’ ‘ “ ” – —) render correctly, and the file stays small. A fixed creation
date makes rebuilds byte-for-byte identical.
"""

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "mini-guide.md"
OUTPUT = HERE / "mini-guide.pdf"
CONTENT = HERE.parent  # organisation.toml and magnets/
PLACEHOLDER = re.compile(r"\{(organisation|website|link:[a-z0-9-]+)\}")

# Fixed date so that rebuilding produces identical bytes.
BUILD_DATE = datetime(2025, 1, 1, tzinfo=timezone.utc)

FONT = "Helvetica"
ENCODING = "windows-1252"
# Characters outside Windows-1252 that may plausibly appear in the source.
CHAR_REPLACEMENTS = {
    "\u2011": "-",  # non-breaking hyphen
    "\u2212": "-",  # minus sign
    "\u2010": "-",  # hyphen
    "\u2009": " ",  # thin space
    "\u202f": "\u00a0",  # narrow no-break space
    "\u2192": "->",  # rightwards arrow
}
# fpdf2 markdown markers we do not use; escape them so they print literally.
UNUSED_MARKERS = ("__", "~~", "--")

# Colours (RGB).
PRIMARY = (22, 82, 99)  # deep petrol: cover, headings
ACCENT = (222, 128, 46)  # warm orange: rules, bullets
TEXT = (45, 45, 45)
MUTED = (120, 120, 120)
COVER_TEXT = (255, 255, 255)
COVER_SUBTLE = (196, 221, 228)

# Layout (mm / pt).
MARGIN = 22
BOTTOM_MARGIN = MARGIN + 6  # leaves room for the footer
BODY_SIZE = 11
LINE_HEIGHT = 5.9
PARA_GAP = 3.2
HEADING_SIZE = 17
BULLET_INDENT = 7


@dataclass
class Block:
    """One piece of body content: a heading, a paragraph or a bullet list."""

    kind: str  # "heading", "paragraph" or "bullets"
    text: str = ""
    items: list[str] = field(default_factory=list)


@dataclass
class Guide:
    """The parsed guide: title, cover paragraphs and body blocks."""

    title: str
    cover: list[str]
    blocks: list[Block]
    kicker: str = ""  # the label above the title


@dataclass
class Names:
    """What the content files call things: the organisation, its website and links, the magnet."""

    organisation: str
    website: str
    links: dict[str, str]
    title: str  # the magnet's title, as the landing page and the mails show it


def read_names(source: Path, content: Path = CONTENT) -> Names:
    """The names for `source` (mini-guide.md: magnets/mini-guide.toml) from the content folder."""
    organisation = tomllib.loads((content / "organisation.toml").read_text(encoding="utf-8"))
    magnet_file = content / "magnets" / f"{source.stem}.toml"
    magnet = tomllib.loads(magnet_file.read_text(encoding="utf-8"))
    return Names(organisation["name"], organisation["website"], dict(organisation.get("links", {})),
                 magnet["title"])


def fill_in(text: str, names: Names, *, links: bool) -> str:
    """Replace the placeholders; `links`: write {link:NAME} as a markdown link (else its address)."""

    def value(match: re.Match) -> str:
        key = match.group(1)
        if key == "organisation":
            return names.organisation
        if key == "website":
            return shown(names.website)
        name = key.removeprefix("link:")
        if name not in names.links:
            raise ValueError(f"{{{key}}}: organisation.toml has no link {name!r} in [links] "
                             f"(it has {', '.join(sorted(names.links))})")
        url = names.links[name]
        return f"[{shown(url)}]({url})" if links else shown(url)

    return PLACEHOLDER.sub(value, text)


def shown(url: str) -> str:
    """An address as a reader types it: without the scheme or a trailing slash."""
    return re.sub(r"^https?://", "", url).rstrip("/")


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def parse_markdown(source: str) -> Guide:
    """Parse the supported Markdown subset into a Guide."""
    title = ""
    kicker: list[str] = []
    blocks: list[Block] = []
    current: Block | None = None

    for number, raw in enumerate(source.splitlines(), start=1):
        line = raw.strip()
        if not line:
            current = None
        elif line.startswith("# "):
            if title:
                raise ValueError(f"line {number}: only one '# ' title allowed")
            title, current = line[2:].strip(), None
        elif line.startswith("## "):
            blocks.append(Block("heading", line[3:].strip()))
            current = None
        elif line.startswith("#"):
            raise ValueError(f"line {number}: unsupported heading level")
        elif line.startswith("- "):
            if current is None or current.kind != "bullets":
                current = Block("bullets")
                blocks.append(current)
            current.items.append(line[2:].strip())
        elif not title:
            kicker.append(line)
        elif current is not None:
            append_continuation(current, line)
        else:
            current = Block("paragraph", line)
            blocks.append(current)

    if not title:
        raise ValueError("the source has no '# ' title")
    guide = split_cover(title, blocks)
    guide.kicker = " ".join(kicker)
    return guide


def append_continuation(block: Block, line: str) -> None:
    """Join a wrapped source line onto the paragraph or last bullet item."""
    if block.kind == "bullets":
        block.items[-1] += " " + line
    else:
        block.text += " " + line


def split_cover(title: str, blocks: list[Block]) -> Guide:
    """Move the paragraphs before the first heading onto the cover."""
    cover: list[str] = []
    while blocks and blocks[0].kind == "paragraph":
        cover.append(blocks.pop(0).text)
    return Guide(title, cover, blocks)


# --------------------------------------------------------------------------
# Text handling
# --------------------------------------------------------------------------


def clean(text: str) -> str:
    """Map the text to Windows-1252, failing loudly on unsupported characters."""
    for char, replacement in CHAR_REPLACEMENTS.items():
        text = text.replace(char, replacement)
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError as error:
        bad = text[error.start]
        raise ValueError(
            f"character {bad!r} (U+{ord(bad):04X}) cannot be printed; "
            "add it to CHAR_REPLACEMENTS"
        ) from error
    return text


def inline(text: str) -> str:
    """Prepare text for fpdf2's markdown mode: keep **bold**, escape the rest."""
    text = clean(text)
    for marker in UNUSED_MARKERS:
        text = text.replace(marker, "\\" + marker)
    return text


def strip_bold(text: str) -> str:
    """Plain text without bold markers (for headings, footer, metadata)."""
    return clean(text.replace("**", ""))


# --------------------------------------------------------------------------
# PDF rendering
# --------------------------------------------------------------------------


class GuidePDF(FPDF):
    """A4 document with a running footer on every page except the cover."""

    def __init__(self, title: str, organisation: str):
        super().__init__(format="A4", unit="mm")
        self.guide_title = title
        self.organisation = organisation
        self.core_fonts_encoding = ENCODING
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(auto=True, margin=BOTTOM_MARGIN)

    def footer(self) -> None:
        if self.page_no() == 1:
            return
        y = self.h - MARGIN + 4
        self.set_draw_color(*ACCENT)
        self.set_line_width(0.3)
        self.line(MARGIN, y, self.w - MARGIN, y)
        self.set_xy(MARGIN, y + 2)
        self.set_font(FONT, "", 8.5)
        self.set_text_color(*MUTED)
        width = self.w - 2 * MARGIN
        self.cell(width, 5, f"{self.guide_title} \u00b7 {self.organisation}", align="L")
        self.set_x(MARGIN)
        self.cell(width, 5, f"Pagina {self.page_no()} van {{nb}}", align="R")


def set_metadata(pdf: GuidePDF, guide: Guide) -> None:
    """Fill in document properties and fix the creation date."""
    pdf.set_title(strip_bold(guide.title))
    pdf.set_author(clean(pdf.organisation))
    pdf.set_subject(strip_bold(guide.cover[0]) if guide.cover else "")
    pdf.set_creator("content/guides/build_guide.py")
    pdf.set_lang("nl-NL")
    pdf.set_creation_date(BUILD_DATE)


def render_cover(pdf: GuidePDF, guide: Guide) -> None:
    """Full-bleed coloured cover with label, title, subtitle and publisher line."""
    pdf.add_page()
    pdf.set_fill_color(*PRIMARY)
    pdf.rect(0, 0, pdf.w, pdf.h, style="F")
    pdf.set_fill_color(*ACCENT)
    pdf.rect(MARGIN + pdf.c_margin, 92, 28, 2.2, style="F")

    width = pdf.w - 2 * MARGIN
    if guide.kicker:
        pdf.set_xy(MARGIN, 80)
        pdf.set_font(FONT, "B", 12)
        pdf.set_text_color(*COVER_SUBTLE)
        pdf.cell(width, 7, strip_bold(guide.kicker).upper(), align="L")
    pdf.set_xy(MARGIN, 102)
    pdf.set_font(FONT, "B", 32)
    pdf.set_text_color(*COVER_TEXT)
    pdf.multi_cell(width, 13, strip_bold(guide.title), align="L")

    if guide.cover:
        pdf.ln(8)
        pdf.set_font(FONT, "", 15)
        pdf.set_text_color(*COVER_SUBTLE)
        pdf.multi_cell(width, 7.5, strip_bold(guide.cover[0]), align="L")

    pdf.set_auto_page_break(auto=False)  # the foot lines sit below the margin
    pdf.set_font(FONT, "", 11)
    pdf.set_text_color(*COVER_SUBTLE)
    for offset, line in enumerate(reversed(guide.cover[1:])):
        pdf.set_xy(MARGIN, pdf.h - MARGIN - 8 - offset * 6)
        pdf.cell(width, 6, strip_bold(line), align="L")
    pdf.set_auto_page_break(auto=True, margin=BOTTOM_MARGIN)


def render_heading(pdf: GuidePDF, text: str) -> None:
    """Section heading in the primary colour with a short accent rule."""
    if pdf.get_y() > pdf.t_margin + 1:
        pdf.ln(6)
    pdf.set_font(FONT, "B", HEADING_SIZE)
    pdf.set_text_color(*PRIMARY)
    pdf.multi_cell(0, 8, strip_bold(text), align="L")
    y = pdf.get_y() + 1.5
    pdf.set_fill_color(*ACCENT)
    pdf.rect(MARGIN + pdf.c_margin, y, 18, 1.2, style="F")
    pdf.set_y(y + 1.2 + 5)


def render_paragraph(pdf: GuidePDF, text: str) -> None:
    """Body paragraph with inline bold support."""
    pdf.set_font(FONT, "", BODY_SIZE)
    pdf.set_text_color(*TEXT)
    pdf.multi_cell(0, LINE_HEIGHT, inline(text), align="L", markdown=True)
    pdf.ln(PARA_GAP)


def render_bullets(pdf: GuidePDF, items: list[str]) -> None:
    """Bullet list with coloured bullets and a hanging indent."""
    text_x = MARGIN + BULLET_INDENT
    text_width = pdf.w - MARGIN - text_x
    for item in items:
        if pdf.will_page_break(LINE_HEIGHT):
            pdf.add_page()
        y = pdf.get_y()
        pdf.set_xy(MARGIN + 1.5, y)
        pdf.set_font(FONT, "B", BODY_SIZE)
        pdf.set_text_color(*ACCENT)
        pdf.cell(BULLET_INDENT - 1.5, LINE_HEIGHT, "\u2022")
        pdf.set_xy(text_x, y)
        pdf.set_font(FONT, "", BODY_SIZE)
        pdf.set_text_color(*TEXT)
        pdf.multi_cell(text_width, LINE_HEIGHT, inline(item), align="L", markdown=True)
        pdf.ln(1.6)
    pdf.ln(PARA_GAP - 1.6)


def render_block(pdf: GuidePDF, block: Block) -> None:
    """Dispatch one block to its renderer."""
    if block.kind == "heading":
        render_heading(pdf, block.text)
    elif block.kind == "bullets":
        render_bullets(pdf, block.items)
    else:
        render_paragraph(pdf, block.text)


def keeps_with_next(block: Block) -> bool:
    """Headings and lead-in paragraphs (ending in ':') stay with what follows."""
    if block.kind == "heading":
        return True
    return block.kind == "paragraph" and block.text.endswith(":")


def group_blocks(blocks: list[Block]) -> list[list[Block]]:
    """Group blocks that should not be split across a page break."""
    groups: list[list[Block]] = []
    for block in blocks:
        if groups and keeps_with_next(groups[-1][-1]):
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def fits_on_page(pdf: GuidePDF, group: list[Block]) -> bool:
    """Whether the group fits in the space left on the current page."""
    with pdf.offset_rendering() as trial:
        for block in group:
            render_block(trial, block)
    return not trial.page_break_triggered


def render_body(pdf: GuidePDF, blocks: list[Block]) -> None:
    """Render the body, moving groups that would be split to a new page.

    Groups taller than a whole page simply flow on. The last section always
    opens a fresh page, so it forms a closing page.
    """
    groups = group_blocks(blocks)
    pdf.add_page()
    for index, group in enumerate(groups):
        at_top = pdf.get_y() <= pdf.t_margin + 1
        is_closing = index > 0 and index == last_section_index(groups)
        if not at_top and (is_closing or not fits_on_page(pdf, group)):
            pdf.add_page()
        for block in group:
            render_block(pdf, block)


def last_section_index(groups: list[list[Block]]) -> int:
    """Index of the group that opens the last section (-1 if none)."""
    starts = [i for i, group in enumerate(groups) if group[0].kind == "heading"]
    return starts[-1] if starts else -1


def build(source: Path = SOURCE, output: Path = OUTPUT, content: Path = CONTENT) -> Path:
    """Parse the Markdown source, fill in the names from the content files, and write the PDF;
    return the output path."""
    names = read_names(source, content)
    guide = parse_markdown(source.read_text(encoding="utf-8"))
    if strip_bold(guide.title) != clean(names.title):
        raise ValueError(f"{source.name}: the title {guide.title!r} is not the magnet's title {names.title!r} "
                         f"(magnets/{source.stem}.toml): the page, the mails and the PDF use one name")
    guide.kicker = fill_in(guide.kicker, names, links=False)
    guide.cover = [fill_in(text, names, links=False) for text in guide.cover]
    for block in guide.blocks:
        block.text = fill_in(block.text, names, links=True)
        block.items = [fill_in(item, names, links=True) for item in block.items]
    pdf = GuidePDF(strip_bold(guide.title), clean(names.organisation))
    set_metadata(pdf, guide)
    render_cover(pdf, guide)
    render_body(pdf, guide.blocks)
    pdf.output(str(output))
    return output


if __name__ == "__main__":
    path = build()
    print(f"Wrote {path} ({path.stat().st_size // 1024} KB)")
