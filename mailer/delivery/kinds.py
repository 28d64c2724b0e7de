"""The mail kinds: one entry each, saying how a mail of that kind is composed and handled.

The renderer composes a mail by its entry (template, subject, words, main link, List-*
headers); the sender handles it by its entry (marketing or transactional, retry policy,
lifetime); enqueue gives it the entry's priority. Adding a kind is one entry here and its
templates under templates/mail/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterator

from markupsafe import Markup

from mailer.content.files import Content
from mailer.content.newsletters import click_sequence
from mailer.store.tables import MARKETING_PRIORITY, TRANSACTIONAL_PRIORITY, MailKind


class UnknownMail(KeyError):
    """The content no longer defines this mail (a sequence step removed or renamed since it
    was queued, or only in a newer process's files)."""


@dataclass(frozen=True)
class MailRef:
    """Which mail an outbox row holds: its kind and what it is about."""

    kind: str
    magnet: str
    sequence: str | None = None  # a drip mail's sequence and step
    step: str | None = None

    def describe(self) -> str:
        if self.kind == MailKind.NEWSLETTER:
            return f"newsletter {self.step}"
        if self.step:
            return f"sequence {self.sequence}, step {self.step}"
        return f"magnet {self.magnet}"


@dataclass(frozen=True)
class Words:
    """What one mail's template needs: its name under templates/mail/ (without .html and
    .txt), the subject, and the template's own variables."""

    template: str
    subject: str
    context: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Tools:
    """What the renderer hands a kind's `words`: values that come from settings, and
    `named_link(name)`, which marks a tracked link to one of the organisation's [links]."""

    confirm_days: int
    named_link: Callable[[str], str]
    main_link: str  # the marker the mail's main link (confirm or download) becomes
    unsubscribe: str  # the marker of the unsubscribe link (marketing mail)
    # tracked_link(name, address): the marker of a tracked link to an address the content gives
    # (a newsletter's plain links); the click redirect finds the address again by the name.
    tracked_link: Callable[[str, str], str] = lambda name, address: address
    # page_link(slug): the absolute address of a public newsletter's page in the archive.
    page_link: Callable[[str], str] = lambda slug: ""


@dataclass(frozen=True)
class Kind:
    name: str  # the outbox rows' kind: a MailKind value for the kinds the code itself queues
    what: str  # the mail in words, for an operator: "a confirmation"
    # Marketing mail goes only to those who consented: it carries List-* headers and a visible
    # unsubscribe link, uses MAILER_MARKETING_FROM, waits for the send window and the pause.
    marketing: bool
    # Lower is claimed first. The claim and an unsubscribe tell marketing rows by their priority
    # (MARKETING_PRIORITY and above), so a marketing kind must have one of those (checked below).
    priority: int
    retry: str  # the retry policy: "transactional" (MAILER_RETRY_TRANSACTIONAL) or "marketing"
    words: Callable[[Content, MailRef, Tools], Words]  # raises UnknownMail
    # The mail's main link: "confirm" or "download" (a method of funnel.links.Links).
    main_link: str
    refs: Callable[[Content], Iterator[MailRef]]  # every mail of this kind the content defines
    # (description, list id before the domain) for List-Id; marketing kinds only.
    list_id: Callable[[Content, MailRef], tuple[str, str]] | None = None
    # A mail whose purpose ends with its link: not sent once older than this many days
    # (a confirmation that arrives after its link expired only confuses). Named by setting.
    lifetime_setting: str | None = None
    # Its unsubscribe link (a method of funnel.links.Links), in the footer and List-Unsubscribe;
    # marketing kinds only. "unsubscribe" ends all marketing mail, "newsletter_unsubscribe" the
    # newsletter alone (its page also offers all mail).
    unsubscribe_link: str = "unsubscribe"
    # (From, Reply-To) of one mail instead of the settings' (None: the settings'); a newsletter's header.
    addresses: Callable[[Content, MailRef], tuple[str | None, str | None]] | None = None

    def __post_init__(self) -> None:
        if self.marketing != (self.priority >= MARKETING_PRIORITY):
            raise ValueError(f"mail kind {self.name!r}: marketing mail needs a priority of {MARKETING_PRIORITY} "
                             "or more, transactional mail one below it")

    def lifetime(self, settings) -> timedelta | None:
        return timedelta(days=getattr(settings, self.lifetime_setting)) if self.lifetime_setting else None


def _magnet_refs(kind: MailKind) -> Callable[[Content], Iterator[MailRef]]:
    return lambda content: (MailRef(kind, slug) for slug in content.magnets)


def _confirm(content: Content, ref: MailRef, tools: Tools) -> Words:
    magnet = content.magnets[ref.magnet]
    mail = magnet.confirm_mail
    return Words("confirm", mail.subject, {"magnet": magnet, "mail": mail, "link": tools.main_link,
                                          "link_days": tools.confirm_days})


def _guide(content: Content, ref: MailRef, tools: Tools) -> Words:
    magnet = content.magnets[ref.magnet]
    mail = magnet.guide_mail
    return Words("guide", mail.subject, {"magnet": magnet, "mail": mail, "link": tools.main_link,
                                        "link_days": magnet.link_max_age_days})


def _consent(content: Content, ref: MailRef, tools: Tools) -> Words:
    magnet = content.magnets[ref.magnet]
    mail = magnet.consent_mail
    return Words("consent", mail.subject, {"magnet": magnet, "mail": mail, "link": tools.main_link,
                                          "link_days": tools.confirm_days})


def _drip_step(content: Content, ref: MailRef):
    sequence = content.sequences.get(ref.sequence or "")
    step = sequence.step(ref.step or "") if sequence else None
    if step is None:
        raise UnknownMail(f"step {ref.step!r} is not in sequence {ref.sequence!r}")
    return sequence, step


def _drip(content: Content, ref: MailRef, tools: Tools) -> Words:
    sequence, step = _drip_step(content, ref)
    return Words(f"drip/{step.template}", step.subject, {
        "magnet": content.magnets[sequence.magnet], "guide_link": tools.main_link,
        "unsubscribe": tools.unsubscribe, "link": tools.named_link,
    })


def _drip_refs(content: Content) -> Iterator[MailRef]:
    for sequence in content.sequences.values():
        for step in sequence.steps:
            yield MailRef(MailKind.DRIP, sequence.magnet, sequence.slug, step.key)


def _drip_list(content: Content, ref: MailRef) -> tuple[str, str]:
    sequence, _ = _drip_step(content, ref)
    return sequence.name, sequence.slug


def newsletter_ref(content: Content, slug: str, magnet: str | None = None) -> MailRef:
    """A newsletter's mail for a lead of `magnet` (the reason in its footer names the guide the
    lead asked for). Its clicks are recorded under sequence "newsletter:SLUG", step SLUG."""
    return MailRef(MailKind.NEWSLETTER, magnet or content.organisation.default_magnet, click_sequence(slug), slug)


def _newsletter_of(content: Content, ref: MailRef):
    newsletter = content.newsletters.get(ref.step or "")
    if newsletter is None or ref.magnet not in content.magnets:
        raise UnknownMail(f"newsletter {ref.step!r} is not in the content folder")
    return newsletter


def _newsletter(content: Content, ref: MailRef, tools: Tools) -> Words:
    from mailer.content import markdown  # markdown-it: only where a newsletter is rendered

    newsletter = _newsletter_of(content, ref)

    def rewrite(href: str) -> str:
        name = markdown.named(href)
        if name is not None:
            return tools.named_link(name)
        if markdown.is_plain(href):
            return tools.tracked_link(markdown.plain_link_name(newsletter.body, href), href)
        return href  # mailto: and the like stay as written

    parts, text = markdown.render(newsletter.body, rewrite)
    return Words("newsletter", newsletter.subject, {
        "magnet": content.magnets[ref.magnet], "newsletter": newsletter, "preheader": newsletter.preheader,
        "body_parts": [(Markup(p.html), p.button) for p in parts], "body_text": text, "unsubscribe": tools.unsubscribe, "link": tools.named_link,
        "guide_link": tools.main_link,
        # "Bekijk deze e-mail in je browser": only a public newsletter has a page (docs/newsletters.md).
        "browser_link": tools.page_link(newsletter.slug) if newsletter.public else "",
    })


def _newsletter_refs(content: Content) -> Iterator[MailRef]:
    for slug in content.newsletters:
        yield newsletter_ref(content, slug)


def _newsletter_list(content: Content, ref: MailRef) -> tuple[str, str]:
    return f"Nieuwsbrief {content.organisation.name}", "nieuwsbrief"


def _newsletter_addresses(content: Content, ref: MailRef) -> tuple[str | None, str | None]:
    newsletter = _newsletter_of(content, ref)
    return newsletter.sender, newsletter.reply_to


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind(MailKind.CONFIRM, "a confirmation", marketing=False, priority=TRANSACTIONAL_PRIORITY, retry="transactional",
         words=_confirm, main_link="confirm", refs=_magnet_refs(MailKind.CONFIRM),
         lifetime_setting="confirm_max_age_days"),
    Kind(MailKind.GUIDE, "a guide mail", marketing=False, priority=TRANSACTIONAL_PRIORITY, retry="transactional",
         words=_guide, main_link="download", refs=_magnet_refs(MailKind.GUIDE)),
    Kind(MailKind.CONSENT, "a consent confirmation", marketing=False, priority=TRANSACTIONAL_PRIORITY,
         retry="transactional", words=_consent, main_link="consent", refs=_magnet_refs(MailKind.CONSENT),
         lifetime_setting="confirm_max_age_days"),
    Kind(MailKind.DRIP, "a drip mail", marketing=True, priority=MARKETING_PRIORITY, retry="marketing",
         words=_drip, main_link="download", refs=_drip_refs, list_id=_drip_list),
    Kind(MailKind.NEWSLETTER, "a newsletter", marketing=True, priority=MARKETING_PRIORITY, retry="marketing",
         words=_newsletter, main_link="download", refs=_newsletter_refs, list_id=_newsletter_list,
         unsubscribe_link="newsletter_unsubscribe", addresses=_newsletter_addresses),
)}
