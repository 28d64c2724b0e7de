"""The dashboard (/beheer/) in Chromium against a real `mailer serve`, as the office uses it.

One `mailer serve` for the module, in its embedded default (a SQLite file, plain http), that
hands its mail to a local SMTP relay (tests/smtp_faults.py) which greylists one address (its
confirmation stays deferred) and refuses the first mail to another (failed): the outbox page has
something real to show. Operators are made with `mailer operator add` (the password on standard
input), leads through the landing page's form and the confirmation mail's link.

Every page is looked at twice: in a browser context that enforces the dashboard's
Content-Security-Policy (the console must show no violation), and in one that bypasses it so that
axe-core (tests/browser/vendor/axe.min.js) can be injected. Full-page screenshots at 1280 and
390 px go to MAILER_TEST_SHOTS (default /work/shots/dashboard/) as <page>-<width>px.png.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path

import pyotp
import pytest
from axe_check import AXE, violations
from playwright.sync_api import expect
from smtp_faults import FaultySMTPServer
from test_browser import MailerServer, browser, mail_parts, only_link, serving  # noqa: F401
from test_newsletter_browser import tab_to
from test_pages_a11y import PAGE_RULES

SHOTS = Path(os.environ.get("MAILER_TEST_SHOTS", "/work/shots/dashboard"))
WIDTHS = (1280, 390)
PASSWORD = "lang-genoeg-wachtwoord-42"
OWNER, EDITOR, VIEWER = "eigenaar@trainingsbureau.nl", "redacteur@trainingsbureau.nl", "kijker@trainingsbureau.nl"
TOTP_OWNER = "tweede.eigenaar@trainingsbureau.nl"  # switches the second factor on: nobody else logs in as it
EXPIRING = "invaller@trainingsbureau.nl"  # its sessions are moved back in time
OPERATORS = ((OWNER, "owner"), (EDITOR, "editor"), (VIEWER, "viewer"), (TOTP_OWNER, "owner"),
             (EXPIRING, "editor"))

# Leads: (first name, address, marketing consent, confirmed)
ANNA = "anna.de.vries@example.nl"  # confirmed, with consent: the lead whose page is looked at
GREYLISTED = "uitgesteld@example.nl"  # its confirmation is answered 451 every time: deferred
REFUSED = "geweigerd@example.nl"  # its confirmation is refused once with 554 5.6.0: failed, then fine on retry
TO_UNSUBSCRIBE = "fleur.bakker@example.nl"
TO_ERASE = "gijs.visser@example.nl"
KEPT = "hanna.smit@example.nl"  # a viewer tries to erase it
LEADS = (
    ("Anna", ANNA, True, True),
    ("Bram", "bram.jansen@example.nl", False, False),
    ("Chris", GREYLISTED, True, False),
    ("Dewi", REFUSED, False, False),
    ("Eva", "eva.mulder@example.nl", False, True),
    ("Fleur", TO_UNSUBSCRIBE, True, True),
    ("Gijs", TO_ERASE, True, True),
    ("Hanna", KEPT, True, True),
)
TEST_INBOX = "test-inbox@trainingsbureau.nl"  # where the editor's test mails go
NEWSLETTER = "voorbeeld"  # content/newsletters/voorbeeld.md
SUBJECT = "Nieuws van het trainingsbureau: programma voor het voorjaar"
SECONDS = 15

PAGES = ["login", "overview", "leads", "lead", "outbox", "sequences", "sequence-step", "newsletters", "newsletter",
         "audit", "account", "operators"]  # the screenshots' names, in the order they are visited
CSP_WORDS = ("Content Security Policy", "Content-Security-Policy", "Refused to")
# The innermost elements that stick out on the right (not counting those in a scrolling box): why a page scrolls sideways.
STICKING_OUT = """() => {
  const width = document.documentElement.clientWidth;
  const clipped = e => {  // by a scrolling ancestor (one an absolute element is positioned in, that is)
    let free = ['absolute', 'fixed'].includes(getComputedStyle(e).position);
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      const style = getComputedStyle(a);
      if (free && style.position === 'static') continue;  // not its containing block: no clipping
      if (style.overflowX !== 'visible') return true;
      free = style.position === 'absolute' || style.position === 'fixed';
    }
    return false;
  };
  const out = e => e.getBoundingClientRect().right > width + 1 && !clipped(e);
  return [...document.querySelectorAll('body *')].filter(e => out(e) && ![...e.children].some(out)).slice(0, 5)
    .map(e => `<${e.tagName.toLowerCase()}${e.id ? ' id=' + e.id : ''}${e.className ? ' class=' + e.className : ''}> `
              + `right edge at ${Math.round(e.getBoundingClientRect().right)} px: "${e.textContent.trim().slice(0, 60)}"`);
}"""
FOCUS_RING = """() => {
  const style = getComputedStyle(document.activeElement);
  return {style: style.outlineStyle, width: style.outlineWidth, text: document.activeElement.textContent.trim()};
}"""


# --- the service, its relay, its operators and its leads -----------------------------------------

@dataclass
class Site:
    """The running service, the relay it hands mail to, and its command line."""

    server: MailerServer
    relay: FaultySMTPServer
    lead_ids: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.server.base_url

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "mailer.cli", *args], env=self.server.env,
                                cwd=self.server.work_dir,
                                input=stdin, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"mailer {' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    def sql(self, statement: str, *params) -> list[tuple]:
        with sqlite3.connect(self.server.instance / "mailer.db", timeout=10) as conn:
            return conn.execute(statement, params).fetchall()

    def one(self, statement: str, *params):
        rows = self.sql(statement, *params)
        assert len(rows) == 1, f"{statement} {params}: {rows}"
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    def wait_for(self, what: str, check, seconds: float = SECONDS):
        """Poll `check()` until it is truthy; its value."""
        deadline = time.monotonic() + seconds
        while not (value := check()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {seconds}s")
            time.sleep(0.1)
        return value

    def mails_to(self, address: str) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(m.data, policy=email.policy.default)
                for m in list(self.relay.received) if address.lower() in (r.lower() for r in m.recipients)]

    def mail_to(self, address: str, containing: str) -> email.message.EmailMessage:
        """The one mail the relay took in for `address` with `containing` in its subject or text."""
        def found():
            return [m for m in self.mails_to(address)
                    if containing in str(m["Subject"]) or containing in mail_parts(m)[0]]
        mails = self.wait_for(f"a mail to {address} with {containing!r}", found)
        assert len(mails) == 1, f"{len(mails)} mails to {address} with {containing!r}"
        return mails[0]


class Visitor:
    """A visitor's plain HTTP client with its own cookies (the public form has a CSRF token)."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def open(self, url: str, fields: dict | None = None) -> str:
        data = None if fields is None else urllib.parse.urlencode(fields).encode()
        with self.opener.open(urllib.parse.urljoin(self.base, url), data=data, timeout=15) as response:
            assert response.status == 200, f"{url}: HTTP {response.status}"
            return response.read().decode()

    def sign_up(self, first_name: str, address: str, marketing: bool) -> None:
        page = self.open("/")
        form = Form()
        form.feed(page)
        fields = dict(form.hidden)
        fields.update(first_name=first_name, email=address, website="")
        if marketing:
            fields["marketing"] = "y"
        answer = self.open(form.action, fields)
        assert "Kijk in je mailbox" in answer, answer[:2000]


class Form(HTMLParser):
    """The first POST form of a page: its action and its hidden fields."""

    def __init__(self):
        super().__init__()
        self.action, self.hidden, self.inside = None, {}, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None and attrs.get("method") == "post":
            self.action, self.inside = attrs.get("action"), True
        elif tag == "input" and self.inside and attrs.get("type") == "hidden":
            self.hidden[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False


def make_leads(site: Site) -> None:
    """Sign everyone up through the form; confirm the confirmed ones with the mail's button."""
    for first_name, address, marketing, _ in LEADS:
        Visitor(site.base).sign_up(first_name, address, marketing)
    for first_name, address, _, confirmed in LEADS:
        if confirmed:
            link = only_link(mail_parts(site.mail_to(address, "/bevestig/"))[0], site.base + "/bevestig/")
            visitor = Visitor(site.base)
            assert "Bevestig je aanvraag" in visitor.open(link)
            assert f"Bedankt, {first_name}" in visitor.open(link, {})
    site.lead_ids.update(site.sql("SELECT email, id FROM leads"))
    # The relay's answers are in the outbox: one mail deferred (451), one failed (554).
    site.wait_for("the greylisted confirmation deferred", lambda: site.sql(
        "SELECT 1 FROM outbox WHERE recipient = ? AND status = 'deferred'", GREYLISTED))
    site.wait_for("the refused confirmation failed", lambda: site.sql(
        "SELECT 1 FROM outbox WHERE recipient = ? AND status = 'failed'", REFUSED))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    relay = FaultySMTPServer().start()
    relay.at_rcpt(GREYLISTED, "451 4.7.1 Greylisted, please try again later")
    relay.after_data(REFUSED, "554 5.6.0 Message content rejected", times=1)
    try:
        with serving(root, MAILER_MAIL_URL=relay.url, MAILER_FORM_MIN_SECONDS="0",
                     MAILER_DRIP_WINDOW="mon-sun 00:00-24:00", MAILER_DRIP_HOLIDAYS="",
                     MAILER_DRIP_INTERVAL="1") as server:
            built = Site(server, relay)
            with server.log_on_failure():
                for address, role in OPERATORS:
                    assert "added as" in built.cli("operator", "add", address, "--role", role, stdin=PASSWORD + "\n")
                make_leads(built)
            yield built
    finally:
        relay.stop()


@pytest.fixture
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


# --- helpers -------------------------------------------------------------------------------------

def new_context(browser, width: int = 1280, **options):  # noqa: F811
    return browser.new_context(viewport={"width": width, "height": 900}, locale="nl-NL", **options)


def watch_csp(page, seen: list[str]) -> None:
    """Collect what the console says about the Content-Security-Policy (a blocked script or style)."""
    def heard(message):
        if any(word in message.text for word in CSP_WORDS):
            seen.append(f"{page.url}: {message.text}")
    page.on("console", heard)


def log_in(page, base: str, address: str, password: str = PASSWORD) -> None:
    """The login form: type the address and the password, press Enter."""
    page.goto(base + "/beheer/login")
    page.get_by_label("E-mailadres").fill(address)
    page.get_by_label("Wachtwoord").fill(password)
    page.get_by_label("Wachtwoord").press("Enter")


def logged_in(page, base: str, address: str) -> None:
    log_in(page, base, address)
    expect(page.locator("h1")).to_have_text("Overzicht")
    assert page.url == base + "/beheer/"


def menu(page, label: str):
    return page.get_by_role("navigation", name="Hoofdmenu").get_by_role("link", name=label, exact=True)


def press(target) -> None:
    """Focus a link or button and press Enter. On the pages with a mail preview, a mouse click
    right after Playwright scrolls can land on a sandboxed (out-of-process) preview frame where it
    was before the scroll, and nothing happens; the keyboard has no such race."""
    target.focus()
    target.press("Enter")


def flash(page):
    return page.locator("main .flash")


def csrf(page) -> str:
    """The CSRF token of the page (the logout form in the header carries it on every page)."""
    return page.locator("header form input[name=csrf_token]").get_attribute("value")


def audit_actions(site: Site) -> list[tuple]:
    return site.sql("SELECT operator_email, action, target, outcome FROM audit_log ORDER BY id")


class Inspector:
    """Each page, at one width: the page rules and a screenshot in the CSP-enforcing tab, axe-core
    in a tab of a CSP-bypassing context logged in as the same operator."""

    def __init__(self, page, axe_page, width: int, shots: Path):
        self.page, self.axe_page, self.width, self.shots = page, axe_page, width, shots
        self.problems: list[str] = []
        self.seen: list[str] = []

    def __call__(self, name: str, heading: str | re.Pattern) -> None:
        page = self.page
        expect(page.locator("h1")).to_have_text(heading)
        assert "Traceback" not in page.content()
        for frame in page.locator("iframe").all():  # let the mail previews load before the picture
            frame.scroll_into_view_if_needed()
        page.wait_for_load_state("load")
        page.screenshot(path=str(self.shots / f"{name}-{self.width}px.png"), full_page=True)
        for problem in page.evaluate(PAGE_RULES):
            if "sideways" in problem:
                problem += "; sticking out: " + "; ".join(page.evaluate(STICKING_OUT))
            self.problems.append(f"{name} at {self.width} px: {problem}")
        response = self.axe_page.goto(page.url)
        assert response.status == 200, f"{name}: {page.url} is {response.status} in the axe tab"
        found = violations(self.axe_page)
        if found:
            self.problems.append(f"{name} at {self.width} px, axe-core:\n{json.dumps(found, indent=2)}")
        self.seen.append(name)


# --- the tests -----------------------------------------------------------------------------------

@pytest.mark.browser
def test_every_page_with_the_keyboard_axe_and_no_csp_violation(site, browser, shots):  # noqa: F811
    assert AXE.is_file(), f"axe-core is not vendored at {AXE}"
    base = site.base
    csp: list[str] = []
    inspectors = []
    with site.server.log_on_failure():
        for width in WIDTHS:
            context = new_context(browser, width)
            axe_context = new_context(browser, width, bypass_csp=True)
            page, axe_page = context.new_page(), axe_context.new_page()
            watch_csp(page, csp)
            inspect = Inspector(page, axe_page, width, shots)
            inspectors.append(inspect)

            assert page.goto(base + "/beheer/").status == 200  # sent to the login page
            assert page.url.startswith(base + "/beheer/login")
            inspect("login", "Inloggen")
            logged_in(axe_page, base, OWNER)
            log_in(page, base, OWNER)
            expect(page.locator("h1")).to_have_text("Overzicht")
            inspect("overview", "Overzicht")

            if width == 1280:
                # The menu with the keyboard: Tab to "Leads", a visible focus ring, Enter.
                tab_to(page, "Leads")
                ring = page.evaluate(FOCUS_RING)
                assert ring["style"] != "none" and ring["width"] != "0px", f"no visible focus on {ring}"
                page.keyboard.press("Enter")
                page.wait_for_url(base + "/beheer/leads")
            else:
                menu(page, "Leads").click()
            inspect("leads", "Leads")

            page.get_by_role("link", name=ANNA).first.click()
            page.wait_for_url(f"{base}/beheer/leads/{site.lead_ids[ANNA]}")
            inspect("lead", f"Lead {site.lead_ids[ANNA]}: {ANNA}")

            menu(page, "Verzending").click()
            inspect("outbox", "Verzending")
            expect(page.locator("main table")).to_contain_text(GREYLISTED)
            expect(page.locator("main table")).to_contain_text("451")

            menu(page, "Reeksen").click()
            inspect("sequences", "Reeksen")
            page.locator("main table a").first.click()
            inspect("sequence-step", re.compile(r"^Stap "))

            press(menu(page, "Nieuwsbrieven"))
            inspect("newsletters", "Nieuwsbrieven")
            page.locator(f"main a[href$='/nieuwsbrieven/{NEWSLETTER}']").first.click()
            inspect("newsletter", SUBJECT)

            press(menu(page, "Logboek"))
            inspect("audit", "Logboek")

            page.locator("header .who").get_by_role("link", name=OWNER).click()
            inspect("account", "Mijn account")

            page.locator("header .who").get_by_role("link", name="Beheerders").click()
            inspect("operators", "Beheerders")
            context.close()
            axe_context.close()
    problems = [p for inspect in inspectors for p in inspect.problems]
    assert not csp, "Content-Security-Policy violations:\n" + "\n".join(csp)
    assert not problems, "\n".join(problems)
    assert [inspect.seen for inspect in inspectors] == [PAGES] * len(WIDTHS)


@pytest.mark.browser
def test_one_action_of_each_kind_through_the_pages_and_the_audit_log_lists_them(site, browser, tmp_path):  # noqa: F811
    base = site.base
    csp: list[str] = []
    deferred = site.one("SELECT id FROM outbox WHERE recipient = ? AND status = 'deferred'", GREYLISTED)
    failed = site.one("SELECT id FROM outbox WHERE recipient = ? AND status = 'failed'", REFUSED)
    with site.server.log_on_failure():
        context = new_context(browser, accept_downloads=True)
        page = context.new_page()
        watch_csp(page, csp)
        page.on("dialog", lambda dialog: dialog.accept())
        logged_in(page, base, EDITOR)

        # The outbox: the failed confirmation is tried again (and now goes out), the deferred one cancelled.
        menu(page, "Verzending").click()
        page.get_by_label(f"Mail {failed} aan {REFUSED} kiezen").check()
        page.get_by_role("button", name="Gekozen mails opnieuw proberen").click()
        expect(flash(page)).to_contain_text("1 mail")
        site.wait_for("the retried mail sent", lambda: site.sql(
            "SELECT 1 FROM outbox WHERE id = ? AND status = 'sent'", failed))
        page.get_by_label(f"Mail {deferred} aan {GREYLISTED} kiezen").check()
        page.get_by_role("button", name="Gekozen mails annuleren").click()
        expect(flash(page)).to_contain_text("1 mail")
        assert site.one("SELECT status FROM outbox WHERE id = ?", deferred) == "cancelled"

        # A sequence step's test mail reaches the relay.
        menu(page, "Reeksen").click()
        page.locator("main table a").first.click()
        page.get_by_label("Stuur naar e-mailadres").fill(TEST_INBOX)
        press(page.get_by_role("button", name="Testmail versturen"))
        expect(flash(page)).to_contain_text(f"verstuurd naar {TEST_INBOX}")
        assert len(site.mails_to(TEST_INBOX)) == 1

        # The newsletter: a test, then planned for tomorrow, then paused.
        press(menu(page, "Nieuwsbrieven"))
        page.locator(f"main a[href$='/nieuwsbrieven/{NEWSLETTER}']").first.click()
        page.get_by_label("Stuur naar e-mailadres").fill(TEST_INBOX)
        press(page.get_by_role("button", name="Testmail versturen"))
        expect(flash(page)).to_contain_text(f"De testmail is verstuurd naar {TEST_INBOX}")
        assert [m for m in site.mails_to(TEST_INBOX) if "[TEST]" in str(m["Subject"]) and SUBJECT in str(m["Subject"])]
        tomorrow = page.evaluate("""() => { const d = new Date(Date.now() + 86400000);
            return d.toISOString().slice(0, 10) + 'T09:00'; }""")
        page.get_by_label("Starten op").fill(tomorrow)
        press(page.get_by_role("button", name="Nieuwsbrief inplannen"))
        expect(flash(page)).to_contain_text("De nieuwsbrief is ingepland voor")
        assert site.one("SELECT status FROM campaigns WHERE slug = ?", NEWSLETTER) == "scheduled"
        press(page.get_by_role("button", name="Campagne pauzeren"))
        expect(flash(page)).to_contain_text("De campagne is gepauzeerd")
        assert site.one("SELECT status FROM campaigns WHERE slug = ?", NEWSLETTER) == "paused"

        # A lead asked by phone to be unsubscribed.
        open_lead(page, site, TO_UNSUBSCRIBE)
        page.get_by_label("Hoe kwam het verzoek binnen?").select_option(label="telefoon")
        page.get_by_role("button", name="Lead afmelden").click()
        expect(flash(page)).to_have_text("De lead is afgemeld en krijgt geen marketingmail meer.")
        expect(page.locator("main")).to_contain_text("Deze lead krijgt al geen marketingmail.")
        assert site.one("SELECT status FROM leads WHERE email = ?", TO_UNSUBSCRIBE) == "unsubscribed"
        context.close()

        # The owner: erase a lead (typing its address), download the leads as CSV.
        context = new_context(browser, accept_downloads=True)
        page = context.new_page()
        watch_csp(page, csp)
        page.on("dialog", lambda dialog: dialog.accept())
        logged_in(page, base, OWNER)
        erased_id = site.lead_ids[TO_ERASE]
        open_lead(page, site, TO_ERASE)
        page.get_by_label("Typ ter bevestiging het e-mailadres van deze lead").fill(TO_ERASE)
        page.get_by_role("button", name="Lead definitief wissen").click()  # the confirm dialog: accepted
        expect(flash(page)).to_contain_text(f"Lead {erased_id} is gewist")
        expect(page.locator("main")).not_to_contain_text(TO_ERASE)
        assert site.sql("SELECT id FROM leads WHERE email = ?", TO_ERASE) == []

        menu(page, "Leads").click()
        with page.expect_download() as download_info:
            page.get_by_role("button", name="Download als CSV").click()
        download = download_info.value
        assert download.failure() is None
        saved = tmp_path / "leads.csv"
        download.save_as(saved)
        assert download.suggested_filename.endswith(".csv"), download.suggested_filename
        rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8-sig"))))
        addresses = {row["email"] for row in rows}
        assert ANNA in addresses and TO_ERASE not in addresses, addresses

        # The audit log lists each of them, with who did it and on what.
        menu(page, "Logboek").click()
        table = page.locator("main table")
        for action, target in (("outbox.retry", f"outbox {failed}"), ("outbox.cancel", f"outbox {deferred}"),
                               ("sequence.test", "step "), ("newsletter.test", f"newsletter {NEWSLETTER}"),
                               ("newsletter.schedule", "campaign "), ("newsletter.pause", "campaign "),
                               ("lead.unsubscribe", f"lead {site.lead_ids[TO_UNSUBSCRIBE]}"),
                               ("lead.erase", f"lead {erased_id}"), ("leads.export", "")):
            row = table.locator("tbody tr", has=page.locator("code", has_text=re.compile(f"^{re.escape(action)}$")))
            expect(row.first).to_be_visible()
            expect(row.first).to_contain_text(target)
        expect(table).not_to_contain_text(TO_ERASE)  # leads by id, never by address
        context.close()
    assert not csp, "Content-Security-Policy violations:\n" + "\n".join(csp)


def open_lead(page, site: Site, address: str) -> None:
    page.goto(f"{site.base}/beheer/leads/{site.lead_ids[address]}")
    expect(page.locator("main")).to_contain_text(address)


@pytest.mark.browser
def test_logging_in_with_the_second_factor(site, browser):  # noqa: F811
    base = site.base
    context = new_context(browser)
    page = context.new_page()
    with site.server.log_on_failure():
        logged_in(page, base, TOTP_OWNER)
        page.locator("header .who").get_by_role("link", name=TOTP_OWNER).click()
        page.get_by_label("Je wachtwoord (ter bevestiging)").fill(PASSWORD)
        page.get_by_role("button", name="Tweede stap instellen").click()
        secret = "".join(page.locator("code.secret").inner_text().split())
        expect(page.get_by_role("img", name=re.compile("QR-code"))).to_be_visible()
        page.get_by_label("Code uit de app").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Tweede stap aanzetten").click()
        expect(flash(page)).to_contain_text("De tweede stap staat aan")
        expect(page.locator("ul.codes li")).not_to_have_count(0)

        page.get_by_role("button", name="Uitloggen").click()
        expect(page.locator("h1")).to_have_text("Inloggen")
        log_in(page, base, TOTP_OWNER)
        page.wait_for_url(base + "/beheer/login/code")
        expect(page.get_by_label("Code")).to_be_focused()
        assert page.get_by_label("Wachtwoord").count() == 0
        # The code that switched it on is used up (a code works once): the app's next one, which
        # the server takes within one step of its clock.
        page.keyboard.type(pyotp.TOTP(secret).at(time.time() + 30))
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Overzicht")
        assert page.url == base + "/beheer/"
        expect(page.locator("header .who")).to_contain_text(TOTP_OWNER)
    context.close()


@pytest.mark.browser
def test_logging_out_ends_the_session_and_an_old_cookie_does_not_get_in(site, browser):  # noqa: F811
    base = site.base
    context = new_context(browser)
    page = context.new_page()
    with site.server.log_on_failure():
        logged_in(page, base, EDITOR)
        cookies = context.cookies()
        assert cookies, "no session cookie after logging in"
        page.get_by_role("button", name="Uitloggen").click()
        expect(page.locator("h1")).to_have_text("Inloggen")
        expect(flash(page)).to_have_text("Je bent uitgelogd.")
        page.goto(base + "/beheer/")
        expect(page.locator("h1")).to_have_text("Inloggen")
        assert page.url.startswith(base + "/beheer/login")

        copy = new_context(browser)
        copy.add_cookies(cookies)
        stolen = copy.new_page()
        stolen.goto(base + "/beheer/leads")
        expect(stolen.locator("h1")).to_have_text("Inloggen")
        assert stolen.url.startswith(base + "/beheer/login")
        expect(stolen.get_by_role("navigation", name="Hoofdmenu")).to_have_count(0)
        copy.close()
    context.close()


@pytest.mark.browser
def test_a_viewer_is_refused_an_owners_action_and_nothing_changes(site, browser):  # noqa: F811
    base = site.base
    with site.server.log_on_failure():
        # An editor paused marketing mail; only an owner may resume it.
        context = new_context(browser)
        page = context.new_page()
        logged_in(page, base, EDITOR)
        menu(page, "Verzending").click()
        if page.get_by_role("button", name="Marketingmail pauzeren").count():
            page.get_by_label("Reden").fill("verkeerde link in de nieuwsbrief")
            page.get_by_role("button", name="Marketingmail pauzeren").click()
        expect(page.locator("main")).to_contain_text("Gepauzeerd")
        context.close()
        pauses = site.sql("SELECT scope, reason, since FROM pauses")
        kept = site.lead_ids[KEPT]
        lead_before = site.sql("SELECT * FROM leads WHERE id = ?", kept)

        context = new_context(browser)
        page = context.new_page()
        logged_in(page, base, VIEWER)
        open_lead(page, site, KEPT)
        expect(page.get_by_role("button", name="Lead definitief wissen")).to_have_count(0)
        token = csrf(page)
        refused_before = len(site.sql("SELECT 1 FROM audit_log WHERE outcome = 'refused'"))
        for path, fields in ((f"/beheer/leads/{kept}/wissen", {"email": KEPT}),
                             ("/beheer/outbox/hervatten", {})):
            answer = context.request.post(base + path, form={"csrf_token": token, **fields})
            assert answer.status == 403, f"{path}: {answer.status}"
            assert "<h1>Geen toegang</h1>" in answer.text(), answer.text()[:1500]
        assert site.sql("SELECT * FROM leads WHERE id = ?", kept) == lead_before
        assert site.sql("SELECT scope, reason, since FROM pauses") == pauses
        assert len(site.sql("SELECT 1 FROM audit_log WHERE outcome = 'refused'")) == refused_before + 2

        # What the viewer sees of it: the Dutch refusal page in the browser too.
        menu(page, "Verzending").click()
        expect(page.get_by_role("button", name="Marketingmail hervatten")).to_have_count(0)
        expect(page.locator("main")).to_contain_text("Alleen een eigenaar kan marketingmail hervatten.")
        context.close()


@pytest.mark.browser
def test_a_session_after_its_idle_time_is_sent_to_the_login_page(site, browser):  # noqa: F811
    base = site.base
    context = new_context(browser)
    page = context.new_page()
    with site.server.log_on_failure():
        logged_in(page, base, EXPIRING)
        menu(page, "Reeksen").click()
        expect(page.locator("h1")).to_have_text("Reeksen")
        # Two hours without a click (the idle limit is 30 minutes): move the session back in time.
        site.sql("UPDATE operator_sessions SET last_seen_at = datetime(last_seen_at, '-2 hours') "
                 "WHERE operator_id = (SELECT id FROM operators WHERE email = ?)", EXPIRING)
        menu(page, "Verzending").click()
        expect(page.locator("h1")).to_have_text("Inloggen")
        assert page.url.startswith(base + "/beheer/login")
        expect(flash(page)).to_have_text("Je sessie is verlopen. Log opnieuw in.")
        # Logging in again goes back to where the operator was going.
        page.get_by_label("E-mailadres").fill(EXPIRING)
        page.get_by_label("Wachtwoord").fill(PASSWORD)
        page.get_by_label("Wachtwoord").press("Enter")
        expect(page.locator("h1")).to_have_text("Verzending")
    context.close()
