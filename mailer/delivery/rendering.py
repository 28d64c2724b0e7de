"""Mail templates -> (subject, text, html, extra headers), and the MIME message around them.

Templates are Jinja2 files in templates/mail/ (drip steps in templates/mail/drip/):
NAME.html and NAME.txt share one context.
HTML gets its CSS inlined (mail clients drop <style> blocks); both parts carry the same
words, so spam filters see a balanced message.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, replace
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr
from functools import cached_property, lru_cache
from pathlib import Path

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from markupsafe import escape

from mailer.content.files import Content
from mailer.delivery.kinds import KINDS, MailRef, Tools, UnknownMail
from mailer.errors import ContentError


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
# inlined once per mail (kind, magnet, step), and every message only swaps the markers for its values.
# css-inline costs about as much as building the message, so this halves the per-mail work.
NAME_MARK = "MAILERNAMEMARK"
LINK_MARK = "https://mailer.invalid/LINKMARK"
UNSUBSCRIBE_MARK = "https://mailer.invalid/UNSUBSCRIBEMARK"
CLICK_MARK = "https://mailer.invalid/click/{name}/"  # one per named link; names are slugs
MARKS = re.compile(r"https://mailer\.invalid/(?:LINKMARK|UNSUBSCRIBEMARK|click/[a-z0-9-]+/)")


@dataclass(frozen=True)
class Prepared:
    """One mail rendered once, with the markers each recipient's values replace. A campaign
    stores it at its start (campaign_mails) and its rows are sent from that copy."""

    subject: str
    text: str  # with the markers
    html: str  # with the markers, CSS inlined
    links: tuple[tuple[str, str], ...] = ()  # the tracked links a marketing mail uses: (name, address)

    @cached_property
    def uses_main_link(self) -> bool:
        """Whether the mail has its kind's main link (a newsletter need not): signing a link
        costs more than the rest of filling in a mail, so an unused one is not made."""
        return LINK_MARK in self.text or LINK_MARK in self.html


class MailRenderer:
    """Renders every kind of mail by its entry in the kind table (mailer/delivery/kinds.py)."""

    def __init__(self, template_dirs: list[Path], content: Content, links, confirm_days: int,
                 list_domain: str = "localhost", click_tracking: bool = True, one_click: bool = True):
        self.env = Environment(
            # The operator's copy first (MAILER_TEMPLATES_PATH), then the shipped templates.
            loader=FileSystemLoader([directory / "mail" for directory in template_dirs]),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.content = content
        self.links = links  # mailer.funnel.links.Links: absolute signed links
        self.confirm_days = confirm_days
        self.list_domain = list_domain
        self.click_tracking = click_tracking
        # RFC 8058: List-Unsubscribe-Post only beside an https List-Unsubscribe URL.
        self.one_click = one_click
        self.inliner = css_inline.CSSInliner(keep_style_tags=False)
        self._prepared: dict[MailRef, Prepared] = {}

    def render(self, ref: MailRef, recipient: Recipient, prepared: Prepared | None = None) -> RenderedMail:
        """Subject, text, HTML and extra headers of one mail for one recipient; the name is
        HTML-escaped in the HTML part. Marketing mail gets its tracked links (or the plain
        ones when click tracking is off), a visible unsubscribe link and the List-* headers
        of RFC 2369, 2919 and 8058. From the content as it is now, or from `prepared` (a
        campaign's frozen mail). UnknownMail if the content no longer has this mail."""
        prepared = prepared or self._prepared.get(ref) or self._prepare(ref)
        kind = KINDS[ref.kind]
        lead_id, email = recipient.lead_id, recipient.email
        values = {LINK_MARK: getattr(self.links, kind.main_link)(lead_id, ref.magnet, email)} \
            if prepared.uses_main_link else {}
        headers: tuple[tuple[str, str], ...] = ()
        if kind.marketing:
            unsubscribe = getattr(self.links, kind.unsubscribe_link)(lead_id, ref.magnet, email)
            values[UNSUBSCRIBE_MARK] = unsubscribe
            for name, address in prepared.links:
                values[CLICK_MARK.format(name=name)] = (
                    self.links.click(lead_id, ref.sequence, ref.step, name, email) if self.click_tracking
                    else address)
            description, list_id = kind.list_id(self.content, ref)
            headers = (
                ("List-Id", _list_id(description, f"{list_id}.{self.list_domain}")),
                ("List-Unsubscribe", f"<{unsubscribe}>"),
                *((("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),) if self.one_click else ()),
            )
        name = recipient.first_name or "daar"
        text, html = prepared.text.replace(NAME_MARK, name), prepared.html.replace(NAME_MARK, str(escape(name)))
        for mark, value in values.items():
            text, html = text.replace(mark, value), html.replace(mark, str(escape(value)))
        return RenderedMail(prepared.subject, text, html, headers)

    def knows(self, ref: MailRef) -> bool:
        """Whether this process's content defines the mail (see UnknownMail). Any other problem
        preparing it is not for this question: rendering raises it again, and the row fails alone."""
        if ref in self._prepared:
            return True
        if ref.kind not in KINDS:  # a kind only a newer process knows (a rolling deploy)
            return False
        try:
            self._prepare(ref)
        except UnknownMail:
            return False
        except Exception:
            return True
        return True

    def check(self) -> None:
        """Prepare every mail of every kind the content defines now, so a broken template
        stops the start-up with its name, instead of failing each mail later."""
        for kind in KINDS.values():
            for ref in kind.refs(self.content):
                try:
                    self._prepare(ref)
                except (TemplateError, ValueError) as exc:
                    template = kind.words(self.content, ref, self._tools({})).template
                    raise ContentError(f"templates/mail/{template}.html or .txt ({ref.describe()}): {exc}") from None

    def _tools(self, used: dict[str, str]) -> Tools:
        named_links = self.content.organisation.links

        def tracked_link(name: str, address: str) -> str:
            used.setdefault(name, address)
            return CLICK_MARK.format(name=name)

        def named_link(name: str) -> str:
            if name not in named_links:
                raise ValueError(f"link({name!r}) is not one of the [links] in organisation.toml "
                                 f"({', '.join(named_links) or 'none defined'})")
            return tracked_link(name, named_links[name])

        return Tools(self.confirm_days, named_link, LINK_MARK, UNSUBSCRIBE_MARK, tracked_link,
                     page_link=self.links.newsletter_page)

    def prepare(self, ref: MailRef, subject: str | None = None) -> Prepared:
        """The mail rendered once from the content as it is now, with its markers (not kept:
        a campaign freezes this); `subject` instead of the content's (a subject test's B)."""
        return self._prepare(ref, subject, keep=False)

    def _prepare(self, ref: MailRef, subject: str | None = None, keep: bool = True) -> Prepared:
        kind = KINDS[ref.kind]
        used: dict[str, str] = {}
        words = kind.words(self.content, ref, self._tools(used))
        if subject is not None:
            words = replace(words, subject=subject)
        context = {"org": self.content.organisation, "subject": words.subject, "name": NAME_MARK, **words.context}
        rendered = self.env.get_template(f"{words.template}.html").render(context)
        html = self.inliner.inline(rendered)
        text = _tidy_text(self.env.get_template(f"{words.template}.txt").render(context))
        for mark in {NAME_MARK, *MARKS.findall(rendered)}:  # css-inline must leave every marker as it was
            if html.count(mark) != rendered.count(mark):
                raise ValueError(f"template {words.template}.html: a placeholder changed while its CSS was inlined")
        if kind.marketing and (UNSUBSCRIBE_MARK not in html or UNSUBSCRIBE_MARK not in text):
            raise ValueError("no unsubscribe link in both parts: extend the marketing layout "
                             "(drip/_layout.html and drip/_layout.txt)")
        prepared = Prepared(words.subject, text, html, tuple(used.items()))
        if keep:
            self._prepared[ref] = prepared
        return prepared


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
    *, sender: str, recipient: Recipient, mail: RenderedMail, message_id: str, date: datetime,
    reply_to: str | None = None,
) -> bytes:
    """The RFC 5322 bytes: multipart/alternative with text first, HTML second, CRLF line ends.
    With `reply_to` (MAILER_REPLY_TO), a Reply-To header: a reply reaches a person.

    Written out directly rather than through email.message.EmailMessage, which costs about
    3 ms a message here against 0.1 ms; tests parse the result with the standard parser.
    """
    headers = (
        f"Date: {format_datetime(date)}\r\n"
        f"From: {_from_header(sender)}\r\n"
        + (f"Reply-To: {_from_header(reply_to)}\r\n" if reply_to else "")
        + f"To: {_to_header(recipient.first_name, recipient.email)}\r\n"
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
