"""Mail templates -> (subject, text, html), and the MIME message around them.

Templates are Jinja2 files in templates/mail/: NAME.html and NAME.txt share one context.
HTML gets its CSS inlined (mail clients drop <style> blocks); both parts carry the same
words, so spam filters see a balanced message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from pathlib import Path

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .content import Content
from .links import Links
from .models import MailKind


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Recipient:
    lead_id: int
    email: str
    first_name: str


class MailRenderer:
    def __init__(self, templates: Path, content: Content, links: Links, confirm_days: int):
        self.env = Environment(
            loader=FileSystemLoader(templates / "mail"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.content = content
        self.links = links
        self.confirm_days = confirm_days
        self.inliner = css_inline.CSSInliner(keep_style_tags=False)

    def render(self, kind: str, recipient: Recipient, magnet_slug: str) -> RenderedMail:
        magnet = self.content.magnets[magnet_slug]
        if kind == MailKind.CONFIRM:
            mail = magnet.confirm_mail
            link = self.links.confirm(recipient.lead_id, magnet.slug, recipient.email)
            days = self.confirm_days
        elif kind == MailKind.GUIDE:
            mail = magnet.guide_mail
            link = self.links.download(recipient.lead_id, magnet.slug, recipient.email)
            days = magnet.link_max_age_days
        else:
            raise ValueError(f"unknown mail kind {kind!r}")
        context = {
            "org": self.content.organisation,
            "magnet": magnet,
            "mail": mail,
            "subject": mail.subject,
            "first_name": recipient.first_name,
            "link": link,
            "link_days": days,
        }
        html = self.env.get_template(f"{kind}.html").render(context)
        text = self.env.get_template(f"{kind}.txt").render(context)
        return RenderedMail(mail.subject, _tidy_text(text), self.inliner.inline(html))


def _tidy_text(text: str) -> str:
    """Collapse the blank lines template blocks leave behind; keep paragraphs apart."""
    # "-- " (with its space) is the signature separator mail clients recognise; keep it intact.
    lines = [line if line == "-- " else line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy) + "\n"


def build_message(
    *, sender: str, recipient: Recipient, mail: RenderedMail, message_id: str, date: datetime
) -> bytes:
    """The RFC 5322 bytes: multipart/alternative with text first, HTML second."""
    message = EmailMessage(policy=SMTP)
    message["Date"] = format_datetime(date)
    message["From"] = sender
    display_name = recipient.first_name or ""
    local, _, domain = recipient.email.rpartition("@")
    message["To"] = Address(display_name=display_name, username=local, domain=domain)
    message["Subject"] = mail.subject
    message["Message-ID"] = message_id
    message.set_content(mail.text, cte="quoted-printable")
    message.add_alternative(mail.html, subtype="html", cte="quoted-printable")
    return message.as_bytes()


def envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1]
