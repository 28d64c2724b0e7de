"""Every page a visitor can see, as Chromium draws it on a phone (390 px) and a desktop (1200 px):
axe-core (tests/browser/vendor/axe.min.js, all its rules) finds no violations, each page has one
main landmark, a footer that is the page's contentinfo and one h1, its links use the page's
colours rather than the browser's default blue and purple, and it does not scroll sideways.

The pages are reached the way a visitor reaches them, on a real `mailer serve`: the form, the
mail's confirm link, its button, a broken link and the new-link form; only the unsubscribe links
(of drip mails and newsletters, which come days later) are signed here with the instance's own key.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from playwright.sync_api import expect
from axe_check import AXE, violations
from test_browser import browser, mail_parts, mailer_server, only_link, tamper  # noqa: F401  (fixtures)

from mailer.clock import SystemClock
from mailer.funnel.links import Links
from mailer.funnel.tokens import Signer

WIDTHS = (390, 1200)
MAIL_SECONDS = 10

# Landmarks and headings, link colours and sideways scrolling, as a list of problems.
PAGE_RULES = """() => {
  const problems = [];
  const mains = document.querySelectorAll('main, [role=main]').length;
  if (mains !== 1) problems.push(`${mains} main landmarks`);
  const contentinfo = [...document.querySelectorAll('footer, [role=contentinfo]')]
    .filter(f => f.getAttribute('role') === 'contentinfo' || !f.closest('main, article, aside, nav, section'));
  if (contentinfo.length !== 1) problems.push(`${contentinfo.length} contentinfo footers (a footer inside main is none)`);
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push(`${h1} h1 headings`);
  const defaults = ['rgb(0, 0, 238)', 'rgb(85, 26, 139)', 'rgb(0, 0, 255)'];
  for (const a of document.querySelectorAll('a')) {
    if (defaults.includes(getComputedStyle(a).color)) problems.push(`link "${a.textContent.trim()}" has the browser's default colour`);
  }
  if (document.documentElement.scrollWidth > document.documentElement.clientWidth)
    problems.push(`scrolls sideways (${document.documentElement.scrollWidth} > ${document.documentElement.clientWidth})`);
  return problems;
}"""


@pytest.mark.browser
def test_every_page_passes_axe_with_landmarks_a_heading_and_readable_links(mailer_server, browser):  # noqa: F811
    assert AXE.is_file(), f"axe-core is not vendored at {AXE}"
    base = mailer_server.base_url
    audits: list[Audit] = []
    with mailer_server.log_on_failure():
        send_example_newsletter(mailer_server)  # the public archive shows it once its campaign started
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900}, locale="nl-NL")
            page = context.new_page()
            audit = Audit(page, width)
            audits.append(audit)

            address = f"a11y.{uuid.uuid4().hex[:10]}@example.nl"
            audit("landing", 200, page.goto(base + "/"))
            page.locator("button[type=submit]").click()
            expect(page.locator(".alert")).to_be_visible()
            audit("landing with errors")

            audit("embed", 200, page.goto(base + "/gids/mini-guide/embed"))
            page.locator("button[type=submit]").click()
            expect(page.locator(".alert")).to_be_visible()
            audit("embed with errors")
            audit("embed, unknown magnet", 404, page.goto(base + "/gids/bestaat-niet/embed"))
            audit("thanks in the embed", 200, page.goto(base + "/gids/mini-guide/bedankt?embed=1"))

            page.goto(base + "/gids/mini-guide")
            page.get_by_label("Voornaam").fill("Iris")
            page.get_by_label("E-mailadres").fill(address)
            page.locator("button[type=submit]").click()
            expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
            audit("thanks")

            confirm_link = only_link(mail_parts(first_mail_to(mailer_server, address))[0], base + "/bevestig/")
            audit("confirm", 200, page.goto(confirm_link))
            page.get_by_role("button", name="Ja, ik bevestig mijn aanvraag").click()
            expect(page.locator("h1")).to_contain_text("Bedankt")
            audit("confirmed")

            # Consent given later: a new signup with the box ticked, then the consent link.
            page.goto(base + "/gids/mini-guide")
            page.get_by_label("Voornaam").fill("Iris")
            page.get_by_label("E-mailadres").fill(address)
            page.check("#marketing")
            page.locator("button[type=submit]").click()
            expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
            audit("consent", 200, page.goto(signed_link(mailer_server, address, "consent")))
            page.get_by_role("button", name="Ja, mail mij over de trainingen").click()
            expect(page.locator("h1")).to_contain_text("Bedankt")
            audit("consent confirmed")

            audit("invalid link", 400, page.goto(tamper(confirm_link)))
            page.locator("form[action$='/nieuwe-link']").get_by_label("E-mailadres").fill(address)
            page.get_by_role("button", name="Stuur mij een nieuwe link").click()
            expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
            audit("new link asked")

            audit("newsletter unsubscribe", 200, page.goto(signed_link(mailer_server, address, "newsletter_unsubscribe")))
            page.get_by_role("button", name="Alleen de nieuwsbrief").click()
            expect(page.locator("h1")).to_have_text("Je ontvangt de nieuwsbrief niet meer")
            audit("newsletter ended")

            audit("unsubscribe", 200, page.goto(unsubscribe_link(mailer_server, address)))
            page.get_by_role("button", name="Ja, meld mij af").click()
            expect(page.locator("h1")).to_have_text("Je bent afgemeld")
            audit("unsubscribed")

            audit("newsletter archive", 200, page.goto(base + "/nieuwsbrief/"))
            page.get_by_role("link", name="Nieuws van het trainingsbureau: programma voor het voorjaar").click()
            expect(page.locator("h1")).to_have_text("Nieuws van het trainingsbureau: programma voor het voorjaar")
            audit("newsletter in the archive")

            audit("privacy", 200, page.goto(base + "/privacy"))
            audit("not found", 404, page.goto(base + "/bestaat-niet"))
            context.close()
    failures = [failure for audit in audits for failure in audit.failures]
    assert not failures, "\n".join(failures)
    assert [len(audit.seen) for audit in audits] == [21] * len(WIDTHS), [audit.seen for audit in audits]


class Audit:
    """axe-core and the page rules on each page a browser tab shows, at one width."""

    def __init__(self, page, width: int):
        self.page, self.width = page, width
        self.failures: list[str] = []
        self.seen: list[str] = []

    def __call__(self, name: str, status: int | None = None, response=None) -> None:
        if status is not None:
            assert response is not None and response.status == status, \
                f"{name}: HTTP {response.status if response else None}, expected {status}"
        found = violations(self.page)
        if found:
            self.failures.append(f"{name} at {self.width} px, axe-core:\n{json.dumps(found, indent=2)}")
        problems = self.page.evaluate(PAGE_RULES)
        if problems:
            self.failures.append(f"{name} at {self.width} px: {'; '.join(problems)}")
        self.seen.append(name)


def send_example_newsletter(server) -> None:
    """`mailer newsletter send voorbeeld` on the running service (no lead is confirmed yet, so
    the campaign is done at once and nobody gets mail); wait until the archive shows it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_") or k.startswith("MAILER_TEST_")}
    env.update(MAILER_INSTANCE_PATH=str(server.instance), MAILER_BASE_URL=server.base_url)
    result = subprocess.run([sys.executable, "-m", "mailer.cli", "newsletter", "send", "voorbeeld", "--no-test"],
                            env=env, cwd=server.instance.parent / "cwd", capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + MAIL_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(server.base_url + "/nieuwsbrief/voorbeeld") as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the campaign of voorbeeld did not start within {MAIL_SECONDS}s")


def first_mail_to(server, address: str) -> email.message.EmailMessage:
    """The first mail written for `address` (its confirmation)."""
    deadline = time.monotonic() + MAIL_SECONDS
    while time.monotonic() < deadline:
        for path in server.mail_files():
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"].addresses[0].addr_spec == address:
                return message
        time.sleep(0.1)
    raise AssertionError(f"no mail to {address} in {server.mail_dir} after {MAIL_SECONDS}s")


def unsubscribe_link(server, address: str) -> str:
    """The unsubscribe link a drip mail would carry, signed with the service's own key."""
    return signed_link(server, address, "unsubscribe")


def signed_link(server, address: str, purpose: str) -> str:
    """A link of a mail (purpose: a method of Links), signed with the service's own key."""
    key = (server.instance / "secret_key").read_text().strip()
    [(lead_id, magnet)] = server.sql(f"SELECT id, magnet FROM leads WHERE email = '{address}'")
    return getattr(Links(server.base_url, Signer((key,), SystemClock())), purpose)(lead_id, magnet, address)
