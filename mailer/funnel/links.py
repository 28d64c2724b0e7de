"""Absolute links in mails, built without a request (workers have none).

The pages (web/links.py) register their routes from the same prefixes, so the two cannot drift apart.
"""

from __future__ import annotations

from mailer.funnel.tokens import CONFIRM, CONSENT, DOWNLOAD, NEWSLETTER_UNSUBSCRIBE, UNSUBSCRIBE, Signer

CONFIRM_PREFIX = "/bevestig"
DOWNLOAD_PREFIX = "/download"
CONSENT_PREFIX = "/toestemming"
UNSUBSCRIBE_PREFIX = "/afmelden"
NEWSLETTER_UNSUBSCRIBE_PREFIX = "/afmelden/nieuwsbrief"  # a newsletter's: only it, or all mail
CLICK_PREFIX = "/k"
ARCHIVE_PREFIX = "/nieuwsbrief"  # the public archive: /nieuwsbrief/, /nieuwsbrief/<slug>, /nieuwsbrief/feed.xml


class Links:
    def __init__(self, base_url: str, signer: Signer):
        self.base_url = base_url
        self.signer = signer

    def confirm(self, lead_id: int, magnet: str, email: str) -> str:
        token = self.signer.lead_link(CONFIRM, lead_id, magnet, email)
        return f"{self.base_url}{CONFIRM_PREFIX}/{token}"

    def consent(self, lead_id: int, magnet: str, email: str) -> str:
        token = self.signer.lead_link(CONSENT, lead_id, magnet, email)
        return f"{self.base_url}{CONSENT_PREFIX}/{token}"

    def download(self, lead_id: int, magnet: str, email: str) -> str:
        token = self.signer.lead_link(DOWNLOAD, lead_id, magnet, email)
        return f"{self.base_url}{DOWNLOAD_PREFIX}/{token}"

    def unsubscribe(self, lead_id: int, magnet: str, email: str) -> str:
        token = self.signer.lead_link(UNSUBSCRIBE, lead_id, magnet, email)
        return f"{self.base_url}{UNSUBSCRIBE_PREFIX}/{token}"

    def newsletter_unsubscribe(self, lead_id: int, magnet: str, email: str) -> str:
        token = self.signer.lead_link(NEWSLETTER_UNSUBSCRIBE, lead_id, magnet, email)
        return f"{self.base_url}{NEWSLETTER_UNSUBSCRIBE_PREFIX}/{token}"

    def click(self, lead_id: int, sequence: str, step: str, link: str, email: str) -> str:
        token = self.signer.click_link(lead_id, sequence, step, link, email)
        return f"{self.base_url}{CLICK_PREFIX}/{token}"

    def newsletter_page(self, slug: str) -> str:
        """The newsletter's public page in the archive (no token: the page names no one)."""
        return f"{self.base_url}{ARCHIVE_PREFIX}/{slug}"
