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
        return self._lead_link(CONFIRM, CONFIRM_PREFIX, lead_id, magnet, email)

    def consent(self, lead_id: int, magnet: str, email: str) -> str:
        return self._lead_link(CONSENT, CONSENT_PREFIX, lead_id, magnet, email)

    def download(self, lead_id: int, magnet: str, email: str) -> str:
        return self._lead_link(DOWNLOAD, DOWNLOAD_PREFIX, lead_id, magnet, email)

    def unsubscribe(self, lead_id: int, magnet: str, email: str) -> str:
        return self._lead_link(UNSUBSCRIBE, UNSUBSCRIBE_PREFIX, lead_id, magnet, email)

    def newsletter_unsubscribe(self, lead_id: int, magnet: str, email: str) -> str:
        return self._lead_link(NEWSLETTER_UNSUBSCRIBE, NEWSLETTER_UNSUBSCRIBE_PREFIX, lead_id, magnet, email)

    def _lead_link(self, purpose: str, prefix: str, lead_id: int, magnet: str, email: str) -> str:
        return f"{self.base_url}{prefix}/{self.signer.lead_link(purpose, lead_id, magnet, email)}"

    def click(self, lead_id: int, sequence: str, step: str, link: str, email: str) -> str:
        token = self.signer.click_link(lead_id, sequence, step, link, email)
        return f"{self.base_url}{CLICK_PREFIX}/{token}"

    def newsletter_page(self, slug: str) -> str:
        """The newsletter's public page in the archive (no token: the page names no one)."""
        return f"{self.base_url}{ARCHIVE_PREFIX}/{slug}"
