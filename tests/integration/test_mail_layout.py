"""Every HTML mail the content defines is built the way that survives where the readers are:
Outlook for Windows (Word's rendering engine), phones and dark mode. Plus the Reply-To header.

Each rule is a function over the parsed mail (the standard library's html.parser) that returns
what breaks it; every rendered mail must return nothing for every rule, and each rule is shown
failing once on a mail that breaks it (test_each_rule_catches_what_it_forbids), so none of them
passes by being blind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import message_from_bytes, policy
from html.parser import HTMLParser

import pytest

from mailer.delivery.kinds import KINDS, MailRef
from mailer.delivery.rendering import Recipient, build_message
from mailer.errors import SettingsError
from mailer.settings import Settings
from mailer.store.tables import MailKind

# --- a small tree over html.parser -----------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list = field(default_factory=list)  # Elements and text strings

    @property
    def style(self) -> dict[str, str]:
        return parse_declarations(self.attrs.get("style", ""))

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def elements(self) -> list[Element]:
        return [child for child in self.children if isinstance(child, Element)]


class Mail:
    """A parsed mail: its element tree and the text of its <style> blocks."""

    def __init__(self, html: str, source: str | None = None):
        builder = _Builder()
        builder.feed(html)
        builder.close()
        self.root = builder.root
        self.styles = builder.styles
        self.source_styles = Mail(source).styles if source is not None else []  # before inlining

    def all(self, tag: str | None = None) -> list[Element]:
        return [e for e in self.root.iter() if tag is None or e.tag == tag]

    def first(self, tag: str) -> Element | None:
        return next(iter(self.all(tag)), None)


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.current = self.root
        self.styles: list[str] = []

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, {name: value or "" for name, value in attrs}, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        if self.current.tag == "style":
            self.styles.append(data)
        self.current.children.append(data)


def parse_declarations(text: str) -> dict[str, str]:
    declarations = {}
    for part in text.split(";"):
        name, colon, value = part.partition(":")
        if colon and name.strip():
            declarations[name.strip().lower()] = " ".join(value.split()).lower()
    return declarations


def style_rules(css: str) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
    """(selector, declarations) of the plain rules of a stylesheet, and its @-blocks apart."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    plain, at_blocks, start, i = [], [], 0, 0
    while (i := css.find("@", i)) != -1:  # take the @-blocks (with their nested braces) out first
        depth, k = 0, css.find("{", i)
        if k == -1:
            break
        while k < len(css):
            depth += {"{": 1, "}": -1}.get(css[k], 0)
            k += 1
            if depth == 0:
                break
        plain.append(css[start:i])
        at_blocks.append(css[i:k])
        start = i = k
    plain.append(css[start:])
    rules = [(" ".join(selector.split()), parse_declarations(body))
             for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", "".join(plain))]
    return rules, at_blocks


COMPOUND = re.compile(r"([a-z][a-z0-9]*)?((?:\.[A-Za-z0-9_-]+)*)")


def matches(element: Element, selector: str) -> bool:
    """Whether a selector of tags, classes and descendant combinators (what these templates
    use; see simple_selector) selects the element."""
    def compound(node: Element, part: str) -> bool:
        tag, classes = COMPOUND.fullmatch(part).groups()
        return ((not tag or node.tag == tag)
                and set(filter(None, classes.split("."))) <= set(node.attrs.get("class", "").split()))

    *ancestors, last = selector.split()
    if not compound(element, last):
        return False
    node = element.parent
    while ancestors and node is not None:
        if compound(node, ancestors[-1]):
            ancestors.pop()
        node = node.parent
    return not ancestors


def simple_selector(selector: str) -> bool:
    return all(COMPOUND.fullmatch(part) and part for part in selector.split())


# --- the rules -------------------------------------------------------------------------------

HIDDEN_FILLER = "\u034f\u200c\u00a0\u200b\ufeff \t\r\n"
LANDMARK_TABLE_ROLES = {"main", "contentinfo"}
FORBIDDEN = (  # what Outlook for Windows drops or mangles, so a layout must not stand on it
    ("position", lambda v: True), ("float", lambda v: True), ("background-image", lambda v: True),
    ("background", lambda v: "url(" in v), ("display", lambda v: "flex" in v or "grid" in v),
)


def rule_lang_is_dutch(mail: Mail) -> list[str]:
    html = mail.first("html")
    lang = html.attrs.get("lang") if html else None
    return [] if lang == "nl" else [f'<html lang="{lang}">, not lang="nl"']


def rule_layout_tables_are_presentation(mail: Mail) -> list[str]:
    """The layout is tables (what the body shows sits in one), and every table is layout:
    role="presentation" (or a landmark role, which also hides its table semantics), with its
    spacing as attributes Outlook reads."""
    body = mail.first("body")
    shown = [e for e in body.elements() if e is not preheader(mail)] if body else []
    problems = [f"the body shows a <{e.tag}>, not a layout table" for e in shown if e.tag != "table"]
    if not shown:
        problems.append("the body shows nothing")
    for table in mail.all("table"):
        role = table.attrs.get("role", "")
        if role not in {"presentation", "none", *LANDMARK_TABLE_ROLES}:
            problems.append(f"a <table> with role={role!r}, not presentation")
        for name in ("border", "cellpadding", "cellspacing"):
            if table.attrs.get(name) != "0":
                problems.append(f'a <table role="{role}"> without {name}="0"')
    return problems


def rule_one_main_landmark(mail: Mail) -> list[str]:
    mains = [e for e in mail.all() if e.attrs.get("role") == "main" or e.tag == "main"]
    if len(mains) != 1:
        return [f"{len(mains)} main landmarks, not one"]
    return [] if mains[0].tag == "table" else [f'role="main" is on a <{mains[0].tag}>, not the content table']


def preheader(mail: Mail) -> Element | None:
    """The first element of the body, if it is hidden the way every client hides it."""
    body = mail.first("body")
    first = body.elements()[0] if body and body.elements() else None
    if first is None:
        return None
    style = first.style
    hidden = (style.get("display") == "none" and style.get("mso-hide") == "all"
              and style.get("max-height") in ("0", "0px") and style.get("opacity") == "0"
              and style.get("overflow") == "hidden")
    return first if hidden else None


def preheader_text(mail: Mail) -> str:
    element = preheader(mail)
    return " ".join(element.text().strip(HIDDEN_FILLER).split()) if element is not None else ""


def rule_hidden_preheader(mail: Mail) -> list[str]:
    if preheader(mail) is None:
        return ["no hidden preheader as the body's first element (display:none, mso-hide:all, "
                "max-height:0, opacity:0, overflow:hidden)"]
    return [] if preheader_text(mail) else ["the hidden preheader has no text"]


def rule_bulletproof_button(mail: Mail) -> list[str]:
    """The button is a padded table cell with its own background colour (what Outlook shows),
    holding a block link with its own padding and colours (the tap target on a phone)."""
    buttons = [a for a in mail.all("a") if "button" in a.attrs.get("class", "").split()]
    if not buttons:
        return ['no button (<a class="button">)']
    problems = []
    for a in buttons:
        label = " ".join(a.text().split())
        cell = a.parent
        if cell.tag != "td" or len(cell.elements()) != 1 or cell.text().strip() != a.text().strip():
            problems.append(f"button {label!r} is not alone in a table cell (it is in a <{cell.tag}>)")
            continue
        colour = cell.attrs.get("bgcolor", "").lower()
        if not colour or cell.style.get("background-color") != colour:
            problems.append(f"button {label!r}: its cell has no bgcolor with the same background-color inline")
        if not any(name.startswith("padding") or name == "mso-padding-alt" for name in cell.style):
            problems.append(f"button {label!r}: its cell has no padding for Outlook (mso-padding-alt)")
        style = a.style
        if style.get("display") != "block":
            problems.append(f"button {label!r}: the link is not display:block (a full-width tap target)")
        if not any(name.startswith("padding") for name in style):
            problems.append(f"button {label!r}: the link has no padding of its own")
        if "color" not in style or style.get("background-color") != colour:
            problems.append(f"button {label!r}: the link has no colour and background colour inline")
        if not a.attrs.get("href"):
            problems.append(f"button {label!r} has no href")
    return problems


def rule_images_have_alt(mail: Mail) -> list[str]:
    return [f"<img src={img.attrs.get('src')!r}> without alt" for img in mail.all("img") if "alt" not in img.attrs]


def _number(value: str) -> float | None:
    try:
        return float(value.strip().removesuffix("px"))
    except ValueError:
        return None


def rule_widths_are_attributes(mail: Mail) -> list[str]:
    """Outlook reads widths from attributes: every table has one, nothing is sized by max-width
    alone, and the content table is at most 600 pixels wide by its attribute."""
    problems = []
    hidden = preheader(mail)
    for element in mail.all():
        if element.tag == "table" and "width" not in element.attrs:
            problems.append(f'a <table role="{element.attrs.get("role")}"> without a width attribute')
        elif "max-width" in element.style and "width" not in element.attrs and element is not hidden:
            problems.append(f"a <{element.tag}> sized by max-width alone")
    main = next((e for e in mail.all() if e.attrs.get("role") == "main"), None)
    width = _number(main.attrs.get("width", "")) if main is not None else None
    if width is None or not 0 < width <= 600:
        problems.append(f"the content table's width attribute is {main.attrs.get('width') if main else None!r}, "
                        "not a number of pixels up to 600")
    return problems


def _all_declarations(mail: Mail):
    for element in mail.all():
        for name, value in element.style.items():
            yield f"<{element.tag}> style", name, value
    for css in mail.styles + mail.source_styles:
        rules, at_blocks = style_rules(css)
        for selector, declarations in rules:
            for name, value in declarations.items():
                yield f"<style> {selector}", name, value
        for block in at_blocks:
            for name, value in parse_declarations(re.sub(r"[^;{]*\{", ";", block).replace("}", ";")).items():
                yield "<style> @-block", name, value


def rule_no_rounded_corners(mail: Mail) -> list[str]:
    """Outlook for Windows draws square corners: the mail must not need rounded ones, so it has none."""
    return [f"{where}: border-radius: {value}" for where, name, value in _all_declarations(mail)
            if name == "border-radius"]


def rule_nothing_outlook_drops(mail: Mail) -> list[str]:
    return [f"{where}: {name}: {value}" for where, name, value in _all_declarations(mail)
            if any(name == forbidden and test(value) for forbidden, test in FORBIDDEN)]


def rule_style_is_inlined(mail: Mail) -> list[str]:
    """Clients that drop <style> (Outlook's Word engine keeps little of it, many webmails drop it)
    still get every rule: each declaration of a plain rule in <style>, before and after
    inlining, is on some element inline, and no rule needs a selector that cannot be inlined.
    @media blocks may stay as an enhancement."""
    problems = []
    for css in mail.styles + mail.source_styles:
        rules, _ = style_rules(css)
        for selectors, declarations in rules:
            for selector in selectors.split(","):
                selector = selector.strip()
                if not simple_selector(selector):  # a pseudo-class, an attribute, a child combinator
                    problems.append(f"<style> {selector}: keep to tags, classes and descendants, "
                                    "which the inliner and this check both follow")
                    continue
                for element in mail.all():
                    if matches(element, selector):
                        missing = [name for name in declarations if name not in element.style]
                        if missing:
                            problems.append(f"<style> {selector} {{{', '.join(missing)}}} "
                                            f"is not inline on a <{element.tag}>")
    return problems


def rule_dark_mode_declared(mail: Mail) -> list[str]:
    metas = {m.attrs.get("name"): m.attrs.get("content", "") for m in mail.all("meta")}
    return [f'no <meta name="{name}" content="light dark">' for name in ("color-scheme", "supported-color-schemes")
            if set(metas.get(name, "").split()) != {"light", "dark"}]


RULES = [rule_lang_is_dutch, rule_layout_tables_are_presentation, rule_one_main_landmark, rule_hidden_preheader,
         rule_bulletproof_button, rule_images_have_alt, rule_widths_are_attributes, rule_no_rounded_corners,
         rule_nothing_outlook_drops, rule_style_is_inlined, rule_dark_mode_declared]


# --- the mails -------------------------------------------------------------------------------

class _Recording:
    """Stands in for the renderer's CSS inliner and keeps what it was given: the mail before
    inlining, whose <style> the rules check as well."""

    def __init__(self, inliner):
        self.inliner, self.sources = inliner, []

    def inline(self, html: str) -> str:
        self.sources.append(html)
        return self.inliner.inline(html)


def render_all(services) -> dict[str, tuple[MailRef, object, str]]:
    """Every mail of every kind the content defines: name -> (ref, rendered mail, HTML before inlining)."""
    renderer = services.renderer
    recording = renderer.inliner = _Recording(renderer.inliner)
    renderer._prepared.clear()  # check() at start-up prepared them without the recording
    mails = {}
    for kind in KINDS.values():
        for ref in kind.refs(services.content):
            mail = renderer.render(ref, Recipient(7, "zoe@example.nl", "Zoë <b>&"))
            mails[f"{ref.kind}:{ref.step or ref.magnet}"] = (ref, mail, recording.sources[-1])
    return mails


@pytest.fixture
def mails(make_services, sqlite_url):
    return render_all(make_services(sqlite_url))


def test_the_content_defines_the_mails_these_tests_read(mails):
    kinds = {ref.kind for ref, _, _ in mails.values()}
    assert kinds >= {MailKind.CONFIRM, MailKind.GUIDE, MailKind.DRIP}
    assert len(mails) >= 9  # confirm, guide and the seven steps of the mini guide's sequence


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__.removeprefix("rule_"))
def test_every_mail_keeps_the_rule(mails, rule):
    broken = {name: problems for name, (_, mail, source) in mails.items()
              if (problems := rule(Mail(mail.html, source)))}
    assert not broken, "\n".join(f"{name}: {'; '.join(problems)}" for name, problems in broken.items())


def test_every_mail_has_a_preheader_of_its_own(mails):
    texts = {name: preheader_text(Mail(mail.html)) for name, (_, mail, _) in mails.items()}
    assert all(texts.values()), texts
    assert len(set(texts.values())) == len(texts), f"mails share a preheader: {texts}"
    for name, text in texts.items():  # the preview line adds to the subject, it does not repeat it
        assert text != mails[name][1].subject, name


def test_every_mail_signs_off_with_the_organisation(mails):
    for name, (_, mail, _) in mails.items():
        for part in (mail.text, Mail(mail.html).first("body").text()):
            assert re.search(r"Hartelijke groet,\s*Trainingsbureau Voorbeeld", part), name


def test_the_last_drip_mail_invites_a_reply(mails):
    last = [name for name, (ref, _, _) in mails.items() if ref.kind == MailKind.DRIP][-1]
    _, mail, _ = mails[last]
    for part in (mail.text, " ".join(Mail(mail.html).first("body").text().split())):
        assert "Beantwoord dan gewoon deze e-mail" in part


def test_no_drip_mail_for_downloaders_asks_whether_the_guide_was_opened(make_services, sqlite_url):
    """A step without skip_if = "downloaded" also goes to those who downloaded the guide."""
    services = make_services(sqlite_url)
    for sequence in services.content.sequences.values():
        for step in sequence.steps:
            if step.skip_if == "downloaded":
                continue
            ref = MailRef(MailKind.DRIP, sequence.magnet, sequence.slug, step.key)
            mail = services.renderer.render(ref, Recipient(7, "zoe@example.nl", "Zoë"))
            for part in (mail.text, mail.html):
                assert not re.search(r"nog niet (geopend|gelezen|gedownload)", part), step.key


# --- each rule can fail ------------------------------------------------------------------------

GOOD = """<!DOCTYPE html><html lang="nl"><head>
<meta name="color-scheme" content="light dark"><meta name="supported-color-schemes" content="light dark">
<title>T</title></head>
<body style="margin: 0;">
<div style="display: none;max-height: 0;overflow: hidden;opacity: 0;mso-hide: all;">Een voorproef.&#847;&zwnj;&nbsp;</div>
<table role="presentation" width="100%" border="0" cellpadding="0" cellspacing="0"><tr><td>
<table role="main" width="600" border="0" cellpadding="0" cellspacing="0" style="width: 100%;max-width: 600px;"><tr><td>
<h1 style="color: #1d3557;">Hallo</h1><p style="margin: 0;">Tekst.</p>
<table role="presentation" width="100%" border="0" cellpadding="0" cellspacing="0"><tr>
<td bgcolor="#1d3557" style="background-color: #1d3557;mso-padding-alt: 14px 20px;"><a class="button" href="https://x.example.nl" style="display: block;padding: 14px 20px;color: #ffffff;background-color: #1d3557;">Klik</a></td>
</tr></table>
</td></tr></table>
</td></tr></table>
</body></html>"""

BREAKS = {  # rule -> (what in GOOD, what instead): each a way the old layout or a careless edit breaks it
    rule_lang_is_dutch: ('lang="nl"', 'lang="en"'),
    rule_layout_tables_are_presentation: ('<table role="presentation" width="100%" border="0" cellpadding="0" '
                                          'cellspacing="0"><tr><td>', '<table width="100%"><tr><td>'),
    rule_one_main_landmark: ('role="main"', 'role="presentation"'),
    rule_hidden_preheader: ("mso-hide: all;", ""),
    rule_bulletproof_button: ("display: block;", "display: inline-block;"),
    rule_images_have_alt: ("<p style", '<img src="logo.png" width="100"><p style'),
    rule_widths_are_attributes: ('role="main" width="600"', 'role="main"'),
    rule_no_rounded_corners: ("display: block;", "display: block;border-radius: 4px;"),
    rule_nothing_outlook_drops: ("margin: 0;\">Tekst", "margin: 0;float: left;\">Tekst"),
    rule_style_is_inlined: ("<title>", "<style>p { line-height: 26px; }</style><title>"),
    rule_dark_mode_declared: ('<meta name="color-scheme" content="light dark">', ""),
}


def test_the_checks_pass_a_mail_built_right():
    assert {rule.__name__: rule(Mail(GOOD)) for rule in RULES} == {rule.__name__: [] for rule in RULES}


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__.removeprefix("rule_"))
def test_each_rule_catches_what_it_forbids(rule):
    old, new = BREAKS[rule]
    assert old in GOOD
    assert rule(Mail(GOOD.replace(old, new, 1)))


# The old layout (before issue 10): a max-width <div>, no preheader, a rounded inline-block
# button in a <p>. What the renderer made of it, trimmed to its structure.
OLD_LAYOUT = """<!DOCTYPE html><html lang="nl"><head><meta charset="utf-8"><title>Bevestig</title></head>
<body style="margin: 0;padding: 0;background: #f4f1ec;">
<div class="wrap" style="max-width: 560px;margin: 0 auto;padding: 24px 16px;">
<div class="card" style="background: #ffffff;border-radius: 6px;padding: 28px 28px 20px;">
<h1 style="font-size: 22px;">Hallo Zoë,</h1><p style="font-size: 16px;">Bevestig je e-mailadres.</p>
<p style="font-size: 16px;"><a class="button" href="https://x.example.nl" style="display: inline-block;background: #1d3557;color: #ffffff;padding: 12px 22px;border-radius: 4px;">Ja</a></p>
</div><div class="footer" style="font-size: 12px;">Trainingsbureau Voorbeeld</div></div>
</body></html>"""


def test_the_old_layout_fails_the_rules():
    failing = {rule.__name__ for rule in RULES if rule(Mail(OLD_LAYOUT))}
    assert failing == {"rule_layout_tables_are_presentation", "rule_one_main_landmark", "rule_hidden_preheader", "rule_bulletproof_button",
                       "rule_widths_are_attributes", "rule_no_rounded_corners", "rule_dark_mode_declared"}


# --- Reply-To ----------------------------------------------------------------------------------

def _compose(services, kind=MailKind.GUIDE):
    ref = next(KINDS[kind].refs(services.content))
    envelope, _ = services.composer.compose(ref, Recipient(7, "zoe@example.nl", "Zoë"), "<m@example.nl>")
    return message_from_bytes(envelope.data, policy=policy.default)


@pytest.mark.parametrize("kind", [MailKind.CONFIRM, MailKind.GUIDE, MailKind.DRIP])
def test_every_mail_carries_reply_to_when_it_is_set(make_services, sqlite_url, kind):
    services = make_services(sqlite_url, MAILER_REPLY_TO="Anne de Vries <anne@example.nl>")
    reply_to = _compose(services, kind)["Reply-To"]
    assert reply_to.addresses[0].addr_spec == "anne@example.nl"
    assert reply_to.addresses[0].display_name == "Anne de Vries"


def test_no_reply_to_when_it_is_not_set(make_services, sqlite_url):
    services = make_services(sqlite_url)
    assert services.settings.reply_to is None
    assert _compose(services)["Reply-To"] is None


def test_reply_to_with_a_non_ascii_name_is_encoded():
    from mailer.delivery.rendering import RenderedMail

    data = build_message(sender="Trainingsbureau <guide@example.nl>", recipient=Recipient(1, "a@example.nl", "A"),
                         mail=RenderedMail("Onderwerp", "tekst\n", "<p>tekst</p>"), message_id="<m@example.nl>",
                         date=datetime(2026, 12, 1, tzinfo=timezone.utc), reply_to="Zoë Jansen <zoe@example.nl>")
    assert data.isascii()
    reply_to = message_from_bytes(data, policy=policy.default)["Reply-To"]
    assert reply_to.addresses[0].display_name == "Zoë Jansen"


def test_a_bad_reply_to_stops_the_start_naming_the_variable(tmp_path):
    from conftest import make_env

    with pytest.raises(SettingsError, match="MAILER_REPLY_TO"):
        Settings.from_env(make_env(tmp_path, MAILER_REPLY_TO="geen adres"), dotenv=tmp_path / "absent.env")
