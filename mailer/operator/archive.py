"""The public newsletter archive (/nieuwsbrief/): which newsletters it shows, and each one as
sent but without personal parts (docs/newsletters.md, "The public archive").

The rule: a newsletter is in the archive when its newest campaign that started mail (status
sending, testing or done, or paused or cancelled after it queued mail) is public: its file said
`public = true` when the campaign froze it, or an operator published it since (`mailer
newsletter publish|unpublish SLUG`). The archive shows that campaign's frozen copy (subject,
preheader, body), never the file as it is now; its date is that campaign's start. A campaign
started before campaigns froze their mail (migration 0007) shows its file, if it is still
there and public. The list is newest first. One read-only query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update

from mailer.content.files import Content
from mailer.content.newsletters import Newsletter
from mailer.errors import InvalidRequest
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
               and_(Campaign.status.in_([CampaignStatus.PAUSED.value, CampaignStatus.CANCELLED.value]),
                    Campaign.queued > 0))


def _entry(content: Content, campaign: Campaign) -> Entry | None:
    if campaign.frozen_at is None:  # started before campaigns froze their mail: the file, if public
        newsletter = content.newsletters.get(campaign.slug)
        if newsletter is None or not newsletter.public:
            return None
        return Entry(campaign.slug, newsletter.subject, newsletter.preheader, campaign.start_at,
                     tuple(body_parts(content, newsletter)))
    if not campaign.public:
        return None
    subject = campaign.ab_subject if campaign.ab_winner == "B" else campaign.subject
    parts = tuple((html, tuple(button) if button else None) for html, button in json.loads(campaign.page))
    return Entry(campaign.slug, subject, campaign.preheader or "", campaign.start_at, parts)


def entries(db: Database, content: Content) -> list[Entry]:
    """The archive: each newsletter's newest started campaign, if public; newest first."""
    query = select(Campaign).where(_started()).order_by(Campaign.start_at.desc(), Campaign.id.desc())
    newest: dict[str, Entry | None] = {}
    with db.read_only() as session:
        for campaign in session.scalars(query):
            if campaign.slug not in newest:
                newest[campaign.slug] = _entry(content, campaign)
    return [found for found in newest.values() if found is not None]


def entry(db: Database, content: Content, slug: str) -> Entry | None:
    """The newsletter's page, or None when it is not in the archive (not public, not sent)."""
    return next((found for found in entries(db, content) if found.slug == slug), None)


def publish(db: Database, slug: str, public: bool) -> int:
    """Show (or withdraw) a sent newsletter in the archive, whatever its file says: every frozen
    campaign of it. The number of campaigns changed; InvalidRequest when none was sent."""
    with db.transaction() as session:
        changed = session.execute(update(Campaign).where(Campaign.slug == slug, Campaign.frozen_at.isnot(None))
                                  .values(public=public)).rowcount
    if not changed:
        raise InvalidRequest(f"newsletter {slug!r} has no campaign that started; until one does, the file's "
                             "`public` decides", "SLUG")
    return changed
