"""The public newsletter archive (/nieuwsbrief/): which newsletters it shows, and each one as
sent but without personal parts (docs/newsletters.md, "The public archive").

The rule: a newsletter is in the archive when its file says `public = true` **and** a campaign
of it has started mail: status sending or done, or paused after it queued mail. A scheduled,
cancelled-before-start or merely tested newsletter is not shown. Its date is the start of its
first such campaign; the list is newest first. One read-only query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select

from mailer.content.files import Content
from mailer.content.newsletters import Newsletter
from mailer.store.database import Database
from mailer.store.tables import Campaign, CampaignStatus


@dataclass(frozen=True)
class Entry:
    newsletter: Newsletter
    sent_at: datetime  # the start of its first campaign that sent mail

    @property
    def slug(self) -> str:
        return self.newsletter.slug


@dataclass(frozen=True)
class Page:
    entry: Entry
    parts: list  # [(html, (href, label) or None)]: the body, links to their plain targets


def _started():
    return or_(Campaign.status.in_([CampaignStatus.SENDING.value, CampaignStatus.DONE.value]),
               and_(Campaign.status == CampaignStatus.PAUSED.value, Campaign.queued > 0))


def entries(db: Database, content: Content) -> list[Entry]:
    """The archive: public newsletters of the content with a started campaign, newest first."""
    public = [slug for slug, newsletter in content.newsletters.items() if newsletter.public]
    if not public:
        return []
    query = (select(Campaign.slug, func.min(Campaign.start_at)).where(Campaign.slug.in_(public), _started())
             .group_by(Campaign.slug))
    with db.read_only() as session:
        started = session.execute(query).all()
    found = [Entry(content.newsletters[slug], sent_at) for slug, sent_at in started]
    return sorted(found, key=lambda entry: (entry.sent_at, entry.slug), reverse=True)


def entry(db: Database, content: Content, slug: str) -> Entry | None:
    return next((found for found in entries(db, content) if found.slug == slug), None)


def page(db: Database, content: Content, slug: str) -> Page | None:
    """The newsletter's page, or None when it is not in the archive (not public, not sent, or
    no such file). Named links become the organisation's address, plain links stay as written:
    no tracked link, no name, no unsubscribe link."""
    from mailer.content import markdown  # markdown-it: only where a newsletter is rendered

    found = entry(db, content, slug)
    if found is None:
        return None
    links = content.organisation.links

    def rewrite(href: str) -> str:
        name = markdown.named(href)
        return links[name] if name is not None else href

    parts, _ = markdown.render(found.newsletter.body, rewrite)
    return Page(found, [(part.html, part.button) for part in parts])
