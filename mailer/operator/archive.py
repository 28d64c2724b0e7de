"""The public newsletter archive (/nieuwsbrief/): which newsletters it shows, and each one as
sent but without personal parts (docs/newsletters.md, "The public archive").

The rule: a newsletter is in the archive when a campaign of it has started mail (status
sending, testing or done, or paused after it queued mail) and its newsletter was public when
that campaign froze it, unless its file now says `public = false` (withdrawn). The archive
shows the newest such campaign's frozen copy (subject, preheader, body), never the file as it
is now; its date is that campaign's start. The list is newest first. One read-only query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select

from mailer.content.files import Content
from mailer.content.newsletters import Newsletter
from mailer.store.database import Database
from mailer.store.tables import Campaign, CampaignStatus


@dataclass(frozen=True)
class Entry:
    slug: str
    subject: str  # as sent: a subject test's winner
    preheader: str
    sent_at: datetime  # the start of the campaign shown
    parts: tuple  # ((html, (href, label) or None), ...): the body, links to their plain targets


def body_parts(content: Content, newsletter: Newsletter) -> list:
    """The body for the archive: named links become the organisation's address, plain links stay
    as written; no tracked link, no name, no unsubscribe link. Frozen at a campaign's start."""
    from mailer.content import markdown  # markdown-it: only where a newsletter is rendered

    links = content.organisation.links

    def rewrite(href: str) -> str:
        name = markdown.named(href)
        return links[name] if name is not None else href

    parts, _ = markdown.render(newsletter.body, rewrite)
    return [(part.html, part.button) for part in parts]


def _started():
    return or_(Campaign.status.in_([CampaignStatus.SENDING.value, CampaignStatus.TESTING.value,
                                    CampaignStatus.DONE.value]),
               and_(Campaign.status == CampaignStatus.PAUSED.value, Campaign.queued > 0))


def entries(db: Database, content: Content) -> list[Entry]:
    """The archive: each public newsletter's newest started campaign, newest first."""
    query = (select(Campaign).where(_started(), Campaign.frozen_at.isnot(None), Campaign.public.is_(True))
             .order_by(Campaign.start_at.desc(), Campaign.id.desc()))
    withdrawn = {slug for slug, newsletter in content.newsletters.items() if not newsletter.public}
    found: dict[str, Entry] = {}
    with db.read_only() as session:
        for campaign in session.scalars(query):
            if campaign.slug in found or campaign.slug in withdrawn:
                continue
            subject = campaign.ab_subject if campaign.ab_winner == "B" else campaign.subject
            parts = tuple((html, tuple(button) if button else None) for html, button in json.loads(campaign.page))
            found[campaign.slug] = Entry(campaign.slug, subject, campaign.preheader or "", campaign.start_at, parts)
    return list(found.values())


def entry(db: Database, content: Content, slug: str) -> Entry | None:
    """The newsletter's page, or None when it is not in the archive (not public, not sent)."""
    return next((found for found in entries(db, content) if found.slug == slug), None)
