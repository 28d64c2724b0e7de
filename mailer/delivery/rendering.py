"""Mail templates -> (subject, text, html, extra headers), and the MIME message around them.

Templates are Jinja2 files in templates/mail/ (drip steps in templates/mail/drip/):
NAME.html and NAME.txt share one context.
HTML gets its CSS inlined (mail clients drop <style> blocks); both parts carry the same
words, so spam filters see a balanced message.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from markupsafe import escape

from .content import Content, Sequence, Step
from .errors import ContentError
from .links import Links
from .models import MailKind


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...] = ()  # beyond the standard ones (List-* on marketing mail)


@dataclass(frozen=True)
class Recipient:
    lead_id: int
    email: str
    first_name: str


# Per-recipient values enter a mail as these markers: each template is rendered and its CSS
# inlined once per (kind, magnet), and every message only swaps the markers for its values.
# css-inline costs about as much as building the message, so this halves the per-mail work.
NAME_MARK = "MAILERNAMEMARK"
LINK_MARK = "https://mailer.invalid/LINKMARK"
UNSUBSCRIBE_MARK = "https://mailer.invalid/UNSUBSCRIBEMARK"
CLICK_MARK = "https://mailer.invalid/click/{name}/"  # one per named link; names are slugs
MARKS = re.compile(r"https://mailer\.invalid/(?:LINKMARK|UNSUBSCRIBEMARK|click/[a-z0-9-]+/)")


@dataclass(frozen=True)
class _Prepared:
    subject: str
    text: str  # with the markers
    html: str  # with the markers, CSS inlined
    links: tuple[str, ...] = ()  # the named links a drip mail uses


class MailRenderer:
    def __init__(self, templates: Path, content: Content, links: Links, confirm_days: int,
                 list_domain: str = "localhost", click_tracking: bool = True, one_click: bool = True):
        self.env = Environment(
            loader=FileSystemLoader(templates / "mail"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.content = content
        self.links = links
        self.confirm_days = confirm_days
        self.list_domain = list_domain
        self.click_tracking = click_tracking
        # RFC 8058: List-Unsubscribe-Post only beside an https List-Unsubscribe URL.
        self.one_click = one_click
        self.inliner = css_inline.CSSInliner(keep_style_tags=False)
        self._prepared: dict[tuple[str, str], _Prepared] = {}

    def render(self, kind: str, recipient: Recipient, magnet_slug: str) -> RenderedMail:
        """Subject, text and HTML for one recipient; the name is HTML-escaped in the HTML part."""
        prepared = self._prepared.get((kind, magnet_slug)) or self._prepare(kind, magnet_slug)
        make_link = self.links.confirm if kind == MailKind.CONFIRM else self.links.download
        link = make_link(recipient.lead_id, magnet_slug, recipient.email)
        name = recipient.first_name or "daar"
        text = prepared.text.replace(NAME_MARK, name).replace(LINK_MARK, link)
        html = prepared.html.replace(NAME_MARK, str(escape(name))).replace(LINK_MARK, str(escape(link)))
        return RenderedMail(prepared.subject, text, html)

    def render_step(self, sequence_slug: str, step_key: str, recipient: Recipient) -> RenderedMail:
        """One drip mail for one recipient: its tracked links (or the plain ones when click
        tracking is off), a visible unsubscribe link, and the List-* headers of RFC 2369,
        2919 and 8058. KeyError if the sequence or step is no longer in the content."""
        sequence = self.content.sequences[sequence_slug]
        step = sequence.step(step_key)
        if step is None:
            raise KeyError(f"step {step_key!r} is not in sequence {sequence_slug!r}")
        prepared = self._prepared.get(("drip", f"{sequence_slug}/{step_key}")) or self._prepare_step(sequence, step)
        lead_id, email, magnet = recipient.lead_id, recipient.email, sequence.magnet
        unsubscribe = self.links.unsubscribe(lead_id, magnet, email)
        values = {
            LINK_MARK: self.links.download(lead_id, magnet, email),
            UNSUBSCRIBE_MARK: unsubscribe,
            **{
                CLICK_MARK.format(name=name): self.links.click(lead_id, sequence_slug, step_key, name, email)
                if self.click_tracking else self.content.organisation.links[name]
                for name in prepared.links
            },
        }
        name = recipient.first_name or "daar"
        text, html = prepared.text.replace(NAME_MARK, name), prepared.html.replace(NAME_MARK, str(escape(name)))
        for mark, value in values.items():
            text, html = text.replace(mark, value), html.replace(mark, str(escape(value)))
        headers = (
            ("List-Id", _list_id(sequence.name, f"{sequence_slug}.{self.list_domain}")),
            ("List-Unsubscribe", f"<{unsubscribe}>"),
            *((("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),) if self.one_click else ()),
        )
        return RenderedMail(prepared.subject, text, html, headers)

    def check(self) -> None:
        """Prepare every mail of every magnet and every drip step now, so a broken template
        stops the start-up with its name, instead of failing each mail later."""
        for slug in self.content.magnets:
            for kind in (MailKind.CONFIRM, MailKind.GUIDE):
                try:
                    self._prepare(kind, slug)
                except (TemplateError, ValueError) as exc:
                    raise ContentError(f"templates/mail/{kind}.html or .txt (magnet {slug}): {exc}") from None
        for sequence in self.content.sequences.values():
            for step in sequence.steps:
                try:
                    self._prepare_step(sequence, step)
                except (TemplateError, ValueError) as exc:
                    raise ContentError(f"templates/mail/drip/{step.template}.html or .txt (sequence "
                                       f"{sequence.slug}, step {step.key}): {exc}") from None

    def _prepare(self, kind: str, magnet_slug: str) -> _Prepared:
        magnet = self.content.magnets[magnet_slug]
        if kind == MailKind.CONFIRM:
            mail, days = magnet.confirm_mail, self.confirm_days
        elif kind == MailKind.GUIDE:
            mail, days = magnet.guide_mail, magnet.link_max_age_days
        else:
            raise ValueError(f"unknown mail kind {kind!r}")
        context = {
            "org": self.content.organisation, "magnet": magnet, "mail": mail, "subject": mail.subject,
            "name": NAME_MARK, "link": LINK_MARK, "link_days": days,
        }
        prepared = self._render_pair(kind, context, mail.subject)
        self._prepared[(kind, magnet_slug)] = prepared
        return prepared

    def _prepare_step(self, sequence: Sequence, step: Step) -> _Prepared:
        named_links = self.content.organisation.links
        used: list[str] = []

        def link(name: str) -> str:
            if name not in named_links:
                raise ValueError(f"link({name!r}) is not one of the [links] in organisation.toml "
                                 f"({', '.join(named_links) or 'none defined'})")
            if name not in used:
                used.append(name)
            return CLICK_MARK.format(name=name)

        context = {
            "org": self.content.organisation, "magnet": self.content.magnets[sequence.magnet],
            "subject": step.subject, "name": NAME_MARK, "guide_link": LINK_MARK,
            "unsubscribe": UNSUBSCRIBE_MARK, "link": link,
        }
        prepared = self._render_pair(f"drip/{step.template}", context, step.subject)
        if UNSUBSCRIBE_MARK not in prepared.html or UNSUBSCRIBE_MARK not in prepared.text:
            raise ValueError("no unsubscribe link in both parts: extend drip/_layout.html and drip/_layout.txt")
        prepared = _Prepared(prepared.subject, prepared.text, prepared.html, tuple(used))
        self._prepared[("drip", f"{sequence.slug}/{step.key}")] = prepared
        return prepared

    def _render_pair(self, name: str, context: dict, subject: str) -> _Prepared:
        rendered = self.env.get_template(f"{name}.html").render(context)
        html = self.inliner.inline(rendered)
        text = _tidy_text(self.env.get_template(f"{name}.txt").render(context))
        for mark in {NAME_MARK, *MARKS.findall(rendered)}:  # css-inline must leave every marker as it was
            if html.count(mark) != rendered.count(mark):
                raise ValueError(f"template {name}.html: a placeholder changed while its CSS was inlined")
        return _Prepared(subject, text, html)


def _tidy_text(text: str) -> str:
    """Collapse the blank lines template blocks leave behind; keep paragraphs apart."""
    # "-- " (with its space) is the signature separator mail clients recognise; keep it intact.
    lines = [line if line == "-- " else line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy) + "\n"


# "=_" cannot occur in a quoted-printable body ("=" is always written "=3D"), so this
# boundary never collides with the content and needs no random part.
BOUNDARY = "=_mailer_alternative"


def build_message(
    *, sender: str, recipient: Recipient, mail: RenderedMail, message_id: str, date: datetime
) -> bytes:
    """The RFC 5322 bytes: multipart/alternative with text first, HTML second, CRLF line ends.

    Written out directly rather than through email.message.EmailMessage, which costs about
    3 ms a message here against 0.1 ms; tests parse the result with the standard parser.
    """
    headers = (
        f"Date: {format_datetime(date)}\r\n"
        f"From: {_from_header(sender)}\r\n"
        f"To: {_to_header(recipient.first_name, recipient.email)}\r\n"
        f"Subject: {_subject(mail.subject)}\r\n"
        f"Message-ID: {_one_line(message_id)}\r\n"
        + "".join(f"{name}: {_one_line(value)}\r\n" for name, value in mail.headers)
        + "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{BOUNDARY}"\r\n'
        "\r\n"
    )
    return b"".join((
        headers.encode("ascii"),
        _part("plain", mail.text),
        _part("html", mail.html),
        f"--{BOUNDARY}--\r\n".encode("ascii"),
    ))


def _part(subtype: str, body: str) -> bytes:
    encoded = binascii.b2a_qp(body.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii") + encoded.replace(b"\n", b"\r\n") + b"\r\n"


@lru_cache(maxsize=16)  # one or two senders, each for thousands of messages
def _from_header(sender: str) -> str:
    return _one_line(formataddr(parseaddr(sender), "utf-8"))


def _to_header(name: str, address: str) -> str:
    """The recipient with their name; a non-ASCII name as RFC 2047 words folded within 78."""
    if not name or name.isascii():
        return _one_line(formataddr((name, address)))
    # The email package's modern folder gets encoded words right; only these names pay for it.
    local, _, domain = address.rpartition("@")
    header = SMTP.header_factory("To", Address(display_name=_one_line(name), username=local, domain=domain))
    return header.fold(policy=SMTP).split(":", 1)[1].strip()


@lru_cache(maxsize=64)
def _list_id(description: str, list_id: str) -> str:
    """RFC 2919: a quoted description (RFC 2047 if it is not ASCII) and the list's dot-atom id."""
    return formataddr((_one_line(description), list_id), "utf-8")


@lru_cache(maxsize=256)  # a handful of subjects, each encoded for thousands of messages
def _subject(subject: str) -> str:
    """RFC 2047 for non-ASCII, folded at 78 characters either way."""
    charset = "us-ascii" if subject.isascii() else "utf-8"
    return Header(_one_line(subject), charset, header_name="Subject").encode(linesep="\r\n")


def _one_line(value: str) -> str:
    """No header value may break a line: a CR or LF would let it start a header of its own."""
    return value.replace("\r", " ").replace("\n", " ")


@lru_cache(maxsize=16)
def envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1]
