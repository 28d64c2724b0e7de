"""The whole funnel in a real browser against the real service, as a visitor on a phone does it.

`mailer serve` runs as a subprocess in its embedded default (a SQLite file and .eml files in
<instance>/mail, a generated secret key); Debian's Chromium drives it through Playwright.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
READY_SECONDS = 20
MAIL_SECONDS = 10


@pytest.mark.browser
def test_visitor_signs_up_confirms_and_downloads_the_guide(mailer_server, browser, project_root, tmp_path):
    magnet = tomllib.loads((project_root / "content/magnets/mini-guide.toml").read_text())
    guide_pdf = (project_root / "content/guides/mini-guide.pdf").read_bytes()
    first_name = "Zoë <b>"
    address = f"zoe.{uuid.uuid4().hex[:10]}@example.nl"
    base = mailer_server.base_url
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="nl-NL",
                                  accept_downloads=True)
    page = context.new_page()

    with mailer_server.log_on_failure():
        # 1. The landing page on a phone: the heading, no sideways scrolling, a usable form.
        response = page.goto(base + "/")
        assert response.status == 200
        expect(page.locator("h1")).to_have_text(magnet["landing"]["heading"])
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), \
            "the landing page scrolls sideways at 390 px"
        assert page.evaluate(UNLABELLED_INPUTS) == [], "visible inputs without a <label for>"

        page.focus("#first_name")
        stops = []
        for _ in range(8):
            page.keyboard.press("Tab")
            stops.append(page.evaluate(ACTIVE_ELEMENT))
            if stops[-1] == "button:submit":
                break
        assert stops[0] == "email", f"Tab from the first name went to {stops}"
        assert "marketing" in stops and stops[-1] == "button:submit", f"Tab stops: {stops}"
        assert stops.index("marketing") < stops.index("button:submit"), f"Tab stops: {stops}"
        assert "website" not in stops, "the honeypot field takes keyboard focus"

        # 2. Sign up; the name has an accent and looks like HTML.
        page.get_by_label("Voornaam").fill(first_name)
        page.get_by_label("E-mailadres").fill(address)
        page.check("#marketing")
        page.get_by_role("button", name=magnet["landing"]["button"]).click()
        expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
        assert page.url.startswith(base + "/gids/mini-guide/bedankt")

        # 3. The confirmation mail: well-formed, both parts, the name escaped in HTML.
        confirm_mail = mailer_server.wait_for_mail(1)
        check_headers(confirm_mail, magnet["mail"]["confirm"]["subject"], address)
        text, html = mail_parts(confirm_mail)
        assert f"Hallo {first_name}," in text
        assert "Zoë &lt;b&gt;" in html and "<b>" not in html, "the first name is not escaped in the HTML part"
        confirm_link = only_link(text, base + "/bevestig/")

        # 4. The confirm link shows one button and changes nothing until it is pressed.
        response = page.goto(confirm_link)
        assert response.status == 200
        expect(page.locator("h1")).to_have_text("Bevestig je aanvraag")
        expect(page.locator("main button")).to_have_count(1)
        expect(page.locator(".card b")).to_have_count(0)  # the name is text, not markup
        expect(page.locator(".card")).to_contain_text(first_name)
        assert mailer_server.outbox() == {"sent": 1}, "opening the confirm link (GET) queued a mail"
        assert len(mailer_server.mail_files()) == 1
        page.get_by_role("button", name="Ja, ik bevestig mijn aanvraag").click()
        expect(page.locator("h1")).to_have_text(f"Bedankt, {first_name}!")

        # 5. The download link on the confirmed page gives the guide as a PDF file.
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download de mini guide (pdf)").click()
        download = download_info.value
        assert download.failure() is None
        saved = tmp_path / "downloaded.pdf"
        download.save_as(saved)
        assert download.suggested_filename.endswith(".pdf"), download.suggested_filename
        assert saved.read_bytes() == guide_pdf, "the downloaded file is not the mini guide"

        # 6. The guide mail arrives with its own working download link; both mails are sent.
        guide_mail = mailer_server.wait_for_mail(2, exclude=[confirm_mail])
        check_headers(guide_mail, magnet["mail"]["guide"]["subject"], address)
        assert guide_mail["From"] == confirm_mail["From"]
        assert guide_mail["Message-ID"] != confirm_mail["Message-ID"]
        text, html = mail_parts(guide_mail)
        assert "<b>" not in html
        download_link = only_link(text, base + "/download/")
        pdf = page.request.get(download_link)
        assert pdf.status == 200
        assert pdf.headers["content-type"] == "application/pdf"
        assert "attachment" in pdf.headers.get("content-disposition", "")
        assert pdf.body() == guide_pdf
        assert mailer_server.wait_for_outbox({"sent": 2}) == {"sent": 2}

        # 7. A tampered download link gets a friendly Dutch page offering a new link.
        response = page.goto(tamper(download_link))
        assert response.status == 400
        assert page.locator("html").get_attribute("lang") == "nl"
        expect(page.locator("h1")).to_have_text("Deze link werkt niet (meer)")
        form = page.locator("form[action$='/nieuwe-link']")
        expect(form.get_by_label("E-mailadres")).to_be_visible()
        expect(form.get_by_role("button", name="Stuur mij een nieuwe link")).to_be_visible()
        assert "Traceback" not in page.content()
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")

        # ... and that form works: a confirmed visitor gets a fresh guide mail with a working link.
        form.get_by_label("E-mailadres").fill(address)
        form.get_by_role("button", name="Stuur mij een nieuwe link").click()
        expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
        fresh_mail = mailer_server.wait_for_mail(3, exclude=[confirm_mail, guide_mail])
        check_headers(fresh_mail, magnet["mail"]["guide"]["subject"], address)
        fresh_link = only_link(mail_parts(fresh_mail)[0], base + "/download/")
        assert page.request.get(fresh_link).body() == guide_pdf

    context.close()


@pytest.mark.browser
def test_a_subscriber_unsubscribes_from_a_drip_mail_in_the_browser(mailer_server, browser):
    address = f"drip.{uuid.uuid4().hex[:10]}@example.nl"
    base = mailer_server.base_url
    context = browser.new_context(viewport=PHONE, is_mobile=True, locale="nl-NL")
    page = context.new_page()
    with mailer_server.log_on_failure():
        page.goto(base + "/")
        page.get_by_label("Voornaam").fill("Daan")
        page.get_by_label("E-mailadres").fill(address)
        page.check("#marketing")
        page.locator("main button[type=submit]").click()
        expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
        confirm_mail = mailer_server.wait_for_mail(1)
        page.goto(only_link(mail_parts(confirm_mail)[0], base + "/bevestig/"))
        page.get_by_role("button", name="Ja, ik bevestig mijn aanvraag").click()
        guide_mail = mailer_server.wait_for_mail(2, exclude=[confirm_mail])

        # Two days pass: the first step falls due (the database holds time).
        mailer_server.sql("UPDATE enrollments SET anchor_at = datetime(anchor_at, '-2 days'), "
                          "next_due_at = datetime(next_due_at, '-2 days')")
        drip_mail = mailer_server.wait_for_mail(3, exclude=[confirm_mail, guide_mail])
        # RFC 8058: one-click only beside an https link; this embedded server is plain http.
        assert drip_mail["List-Unsubscribe-Post"] is None
        text = mail_parts(drip_mail)[0]
        unsubscribe = only_link(text, base + "/afmelden/")
        assert drip_mail["List-Unsubscribe"] == f"<{unsubscribe}>"

        assert page.request.get(only_link(text, base + "/download/")).status == 200  # the guide, again

        # The unsubscribe link shows a page with one button; only the button unsubscribes.
        page.goto(unsubscribe)
        expect(page.locator("h1")).to_have_text("Afmelden")
        expect(page.locator("main button")).to_have_count(1)
        assert mailer_server.sql("SELECT status FROM leads") == [("confirmed",)]
        page.get_by_role("button", name="Ja, meld mij af").click()
        expect(page.locator("h1")).to_have_text("Je bent afgemeld")
        assert mailer_server.sql("SELECT status, marketing_consent FROM leads") == [("unsubscribed", 0)]
        assert mailer_server.sql("SELECT status FROM enrollments") == [("stopped",)]
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    context.close()


# --- the service and the browser -----------------------------------------------------------

@dataclass
class MailerServer:
    """A running `mailer serve`, its folders and its log."""

    base_url: str
    instance: Path
    process: subprocess.Popen
    log_path: Path
    seen: list[Path] = field(default_factory=list)
    env: dict = field(default_factory=dict)  # its environment, for a command on the same service
    work_dir: Path | None = None  # where it runs (no .env there)

    @property
    def mail_dir(self) -> Path:
        return self.instance / "mail"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    @contextmanager
    def log_on_failure(self):
        """Add the service's stderr to any failure inside the block."""
        try:
            yield
        except Exception as exc:
            exc.add_note(f"--- mailer serve stderr (exit code {self.process.poll()}) ---\n{self.log()}")
            raise

    def mail_files(self) -> list[Path]:
        return sorted(self.mail_dir.glob("*.eml")) if self.mail_dir.is_dir() else []

    def wait_for_mail(self, count: int, exclude: list[EmailMessage] = ()) -> EmailMessage:
        """Wait until `count` .eml files exist; return the one message not in `exclude`."""
        deadline = time.monotonic() + MAIL_SECONDS
        while len(files := self.mail_files()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(files)} mail(s) in {self.mail_dir} after {MAIL_SECONDS}s, expected {count}")
            time.sleep(0.1)
        assert len(files) == count, f"expected {count} mails, found {[f.name for f in files]}"
        known = {m["Message-ID"] for m in exclude}
        fresh = [m for m in map(read_mail, files) if m["Message-ID"] not in known]
        assert len(fresh) == 1, f"expected one new mail, found {len(fresh)}"
        return fresh[0]

    def sql(self, statement: str) -> list[tuple]:
        """Run one statement on the service's SQLite file (WAL: beside the running service)."""
        with sqlite3.connect(self.instance / "mailer.db", timeout=10) as conn:
            return conn.execute(statement).fetchall()

    def health(self) -> dict:
        with urllib.request.urlopen(self.base_url + "/healthz", timeout=5) as response:
            return json.load(response)

    def outbox(self) -> dict[str, int]:
        return self.health()["outbox"]

    def wait_for_outbox(self, expected: dict[str, int]) -> dict[str, int]:
        """The outbox counts once they equal `expected`, or the last counts after a deadline."""
        deadline = time.monotonic() + MAIL_SECONDS
        while (counts := self.outbox()) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return counts


@contextmanager
def serving(root: Path, **settings: str):
    """`mailer serve` on a free port with its instance in root/instance, run from root/cwd (no
    stray .env from the project folder), the test's MAILER_* settings on top of the embedded
    default; a MailerServer until the block ends, then SIGTERM."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    instance = root / "instance"
    work_dir = root / "cwd"
    work_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_") or k.startswith("MAILER_TEST_")}
    env.update(MAILER_INSTANCE_PATH=str(instance), MAILER_BASE_URL=base_url, **settings)
    log_path = root / "mailer-serve.log"
    with open(log_path, "wb") as log, open(root / "mailer-serve.out", "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mailer.cli", "serve", "--port", str(port)],
                                   env=env, cwd=work_dir, stdout=out, stderr=log)
    server = MailerServer(base_url, instance, process, log_path, env=env, work_dir=work_dir)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def mailer_server(tmp_path):
    # Drip mail may go out at any hour of the test, and the drip job runs every second.
    with serving(tmp_path, MAILER_FORM_MIN_SECONDS="0", MAILER_DRIP_WINDOW="mon-sun 00:00-24:00",
                 MAILER_DRIP_INTERVAL="1") as server:
        yield server


@pytest.fixture
def browser(chromium_path):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _wait_until_ready(server: MailerServer) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"mailer serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if server.health().get("status") == "ok":
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mailer serve not ready after {READY_SECONDS}s:\n{server.log()}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- mails, links and pages ----------------------------------------------------------------

def read_mail(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def check_headers(message: EmailMessage, subject: str, address: str) -> None:
    assert message["Subject"] == subject
    assert message["Date"] is not None and message["Date"].datetime.tzinfo is not None
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", message["Message-ID"] or ""), message["Message-ID"]
    assert message["From"] is not None and "@" in message["From"].addresses[0].addr_spec
    assert [a.addr_spec for a in message["To"].addresses] == [address]


def mail_parts(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and HTML bodies of a multipart/alternative mail."""
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None, "the mail needs a text/plain and a text/html part"
    return text.get_content(), html.get_content()


def only_link(text: str, prefix: str) -> str:
    """The one link starting with `prefix` in a plain-text mail."""
    links = set(re.findall(re.escape(prefix) + r"[A-Za-z0-9_.\-]+", text))
    assert len(links) == 1, f"expected one {prefix} link in the mail, found {links}:\n{text}"
    return links.pop()


def tamper(link: str) -> str:
    """Change the first character of the signature (the last one may carry only padding bits)."""
    head, signature = link.rsplit(".", 1)
    first = "B" if signature[0] == "A" else "A"
    return f"{head}.{first}{signature[1:]}"


# The id of the focused element, or tag:type when it has none (e.g. "button:submit").
ACTIVE_ELEMENT = """() => {
  const el = document.activeElement;
  return el.id || el.tagName.toLowerCase() + (el.type ? ':' + el.type : '');
}"""

# Ids (or names) of rendered form inputs that no <label for> names.
UNLABELLED_INPUTS = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(el => el.checkVisibility() && !el.closest('[aria-hidden=true]'))
  .filter(el => !el.id || !document.querySelector(`label[for="${CSS.escape(el.id)}"]`)?.textContent.trim())
  .map(el => el.id || el.name)"""
