"""The newsletter in Chromium against a real `mailer serve`: the public archive and a newsletter's
page pass axe-core on a phone (390 px) and a desktop (1280 px), and a reader who follows the
unsubscribe link of a newsletter it received sees both choices and gets the one it picks.

Screenshots of each page go to MAILER_TEST_SHOTS (default /work/shots/newsletter/) for a person
to look at; file names say page and width.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from axe_check import AXE, violations
from playwright.sync_api import expect
from test_browser import MailerServer, browser, mail_parts, only_link, serving  # noqa: F401
from test_pages_a11y import PAGE_RULES, send_example_newsletter

SHOTS = Path(os.environ.get("MAILER_TEST_SHOTS", "/work/shots/newsletter"))
WIDTHS = (390, 1280)
PHONE = {"width": 390, "height": 844}
SUBJECT = "Nieuws van het trainingsbureau: programma voor het voorjaar"  # content/newsletters/voorbeeld.md
MAIL_SECONDS = 15


@pytest.fixture
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture
def newsletter_server(tmp_path):
    """`mailer serve` in its embedded default (SQLite, .eml files) with a send window that is
    open at every hour and on every day, holidays too, so its newsletter goes out whenever the
    test runs; the campaigns and drip jobs run every second."""
    # send_example_newsletter runs its command in the server's folder too
    with serving(tmp_path, MAILER_FORM_MIN_SECONDS="0", MAILER_DRIP_WINDOW="mon-sun 00:00-24:00",
                 MAILER_DRIP_HOLIDAYS="", MAILER_DRIP_INTERVAL="1") as server:
        yield server


def check_page(page, name: str, width: int, shots: Path) -> list[str]:
    """axe-core and the site's page rules on what the tab shows; a full-page screenshot."""
    page.screenshot(path=str(shots / f"{name}-{width}px.png"), full_page=True)
    problems = [f"{name} at {width} px: {p}" for p in page.evaluate(PAGE_RULES)]
    found = violations(page)
    if found:
        problems.append(f"{name} at {width} px, axe-core:\n{json.dumps(found, indent=2)}")
    return problems


@pytest.mark.browser
def test_the_archive_and_a_newsletter_page_pass_axe_on_a_phone_and_a_desktop(newsletter_server, browser, shots):  # noqa: F811
    assert AXE.is_file(), f"axe-core is not vendored at {AXE}"
    base = newsletter_server.base_url
    problems: list[str] = []
    with newsletter_server.log_on_failure():
        send_example_newsletter(newsletter_server)  # its campaign starts: the archive lists it
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900}, locale="nl-NL")
            page = context.new_page()
            response = page.goto(base + "/nieuwsbrief/")
            assert response.status == 200
            expect(page.locator("h1")).to_be_visible()
            link = page.get_by_role("link", name=SUBJECT)
            expect(link).to_be_visible()
            problems += check_page(page, "archive", width, shots)

            link.click()
            expect(page.locator("h1")).to_have_text(SUBJECT)
            assert page.url == base + "/nieuwsbrief/voorbeeld"
            expect(page.get_by_role("link", name="Plan een kennismaking")).to_be_visible()  # the button
            assert "/afmelden/" not in page.content() and "Hallo" not in page.locator("main").inner_text()
            problems += check_page(page, "newsletter-voorbeeld", width, shots)
            context.close()
    assert not problems, "\n".join(problems)


@pytest.mark.browser
def test_a_reader_chooses_how_to_unsubscribe_from_the_newsletter(newsletter_server, browser, shots):  # noqa: F811
    server, base = newsletter_server, newsletter_server.base_url
    tag = uuid.uuid4().hex[:8]
    only_newsletter, everything = f"alleen.{tag}@example.nl", f"alles.{tag}@example.nl"
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="nl-NL")
    page = context.new_page()
    with server.log_on_failure():
        for name, address in (("Noor", only_newsletter), ("Sem", everything)):
            sign_up_and_confirm(page, server, name, address)
        send_example_newsletter(server)  # both are confirmed with consent: both get it
        links = {address: only_link(mail_parts(mail_to(server, address, SUBJECT))[0], base + "/afmelden/nieuwsbrief/")
                 for address in (only_newsletter, everything)}
        problems: list[str] = []

        # Noor opens the link: two choices, nothing changed yet; she picks one with the keyboard.
        assert page.goto(links[only_newsletter]).status == 200
        expect(page.locator("h1")).to_have_text("Afmelden")
        expect(page.get_by_role("button", name="Alleen de nieuwsbrief")).to_be_visible()
        expect(page.get_by_role("button", name="Alle e-mails van ons")).to_be_visible()
        problems += check_page(page, "unsubscribe-choices", 390, shots)
        assert lead(server, only_newsletter)["newsletter_ended_at"] is None, "opening the link (GET) changed something"
        tab_to(page, "Alleen de nieuwsbrief")
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Je ontvangt de nieuwsbrief niet meer")
        problems += check_page(page, "newsletter-ended", 390, shots)

        noor = lead(server, only_newsletter)
        assert (noor["status"], noor["marketing_consent"]) == ("confirmed", 1)
        assert noor["newsletter_ended_at"] is not None
        assert server.sql(f"SELECT status FROM enrollments WHERE lead_id = {noor['id']}") == [("active",)]
        assert server.sql(f"SELECT kind, form, marketing_consent FROM consent_events WHERE lead_id = {noor['id']} "
                          "AND kind IN ('newsletter-end', 'unsubscribe')") == [("newsletter-end", "newsletter-page", 1)]

        # Sem opens his link and clicks "Alle e-mails van ons".
        assert page.goto(links[everything]).status == 200
        page.get_by_role("button", name="Alle e-mails van ons").click()
        expect(page.locator("h1")).to_have_text("Je bent afgemeld")
        problems += check_page(page, "unsubscribed-all", 390, shots)
        sem = lead(server, everything)
        assert (sem["status"], sem["marketing_consent"]) == ("unsubscribed", 0)
        assert server.sql(f"SELECT status FROM enrollments WHERE lead_id = {sem['id']}") == [("stopped",)]
        assert server.sql(f"SELECT kind, form FROM consent_events WHERE lead_id = {sem['id']} "
                          "AND kind IN ('newsletter-end', 'unsubscribe')") == [("unsubscribe", "newsletter-page")]
    context.close()
    assert not problems, "\n".join(problems)


# --- helpers -------------------------------------------------------------------------------------

def sign_up_and_confirm(page, server: MailerServer, first_name: str, address: str) -> None:
    """The form on the landing page with the marketing box ticked, then the mail's confirm link."""
    base = server.base_url
    page.goto(base + "/")
    page.get_by_label("Voornaam").fill(first_name)
    page.get_by_label("E-mailadres").fill(address)
    page.check("#marketing")
    page.locator("main button[type=submit]").click()
    expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
    confirm = mail_to(server, address, "/bevestig/")
    page.goto(only_link(mail_parts(confirm)[0], base + "/bevestig/"))
    page.get_by_role("button", name="Ja, ik bevestig mijn aanvraag").click()
    expect(page.locator("h1")).to_contain_text("Bedankt")


def mail_to(server: MailerServer, address: str, containing: str) -> email.message.EmailMessage:
    """The one mail written for `address` whose subject or text part contains `containing`."""
    deadline = time.monotonic() + MAIL_SECONDS
    while True:
        found = []
        for path in server.mail_files():
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"].addresses[0].addr_spec != address:
                continue
            if containing in str(message["Subject"]) or containing in mail_parts(message)[0]:
                found.append(message)
        if found:
            assert len(found) == 1, f"{len(found)} mails to {address} with {containing!r}"
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail to {address} with {containing!r} after {MAIL_SECONDS}s")
        time.sleep(0.1)


def lead(server: MailerServer, address: str) -> dict:
    [row] = server.sql(f"SELECT id, status, marketing_consent, newsletter_ended_at FROM leads WHERE email = '{address}'")
    return dict(zip(("id", "status", "marketing_consent", "newsletter_ended_at"), row))


FOCUSED = "() => document.activeElement ? document.activeElement.textContent.trim() : ''"


def tab_to(page, label: str, limit: int = 20) -> None:
    """Press Tab from the top of the page until the element called `label` has the focus."""
    stops = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        stops.append(page.evaluate(FOCUSED))
        if stops[-1] == label:
            return
    raise AssertionError(f"Tab never reached {label!r}; it stopped at {stops}")
