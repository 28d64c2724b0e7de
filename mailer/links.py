"""Absolute links in mails, built without a request (workers have none).

The views register their routes from the same prefixes, so the two cannot drift apart.
"""

from __future__ import annotations

from .tokens import CONFIRM, DOWNLOAD, Signer

CONFIRM_PREFIX = "/bevestig"
DOWNLOAD_PREFIX = "/download"


class Links:
    def __init__(self, base_url: str, signer: Signer):
        self.base_url = base_url
        self.signer = signer

    def confirm(self, lead_id: int, magnet: str, email: str) -> str:
        token = self.signer.lead_link(CONFIRM, lead_id, magnet, email)
        return f"{self.base_url}{CONFIRM_PREFIX}/{token}"

    def download(self, lead_id: int, magnet: str, email: str) -> str:
        token = self.signer.lead_link(DOWNLOAD, lead_id, magnet, email)
        return f"{self.base_url}{DOWNLOAD_PREFIX}/{token}"
