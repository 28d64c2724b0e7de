"""The embedded form on someone else's site, in Chromium: a host page served from another origin
(`localhost` and its own port, against the service's `127.0.0.1`) puts the form in an iframe.

Every link inside the frame, on the form and on every page that answers inside it, opens
outside the frame (a new tab, or the whole window): our other pages refuse to be framed
(X-Frame-Options: DENY), so a link followed inside the frame would show the browser's refusal.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect
from test_browser import PHONE, browser, mailer_server  # noqa: F401  (fixtures)

# Links in the frame that would navigate the frame itself, and _blank links without noopener.
LINKS_THAT_STAY = """() => [...document.querySelectorAll('a[href]')]
  .filter(a => !['_blank', '_top'].includes(a.target) || (a.target === '_blank' && !/\\bnoopener\\b/.test(a.rel)))
  .map(a => `${a.textContent.trim()} -> ${a.getAttribute('href')} (target=${a.target || 'none'}, rel=${a.rel || 'none'})`)"""


@contextmanager
def host_site(frames: dict[str, str]):
    """A site of someone else's on localhost:<port>: one page per path, each with an iframe."""
    def page(src: str) -> bytes:
        return (
            '<!DOCTYPE html><html lang="nl"><head><meta charset="utf-8"><title>Gemeente Voorbeeld</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            '<body style="font-family: sans-serif; margin: 1rem; background: #fff">'
            '<h1>Nieuws voor medewerkers</h1><p>Vraag hieronder de gratis mini guide aan.</p>'
            f'<iframe src="{src}" title="Mini guide aanvragen" style="border:0;width:100%;height:40rem"></iframe>'
            '</body></html>'
        ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            src = frames.get(self.path)
            body = page(src) if src else b"not here"
            self.send_response(200 if src else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def frame_of(page, url_part: str):
    """The page's frame whose URL contains url_part, once it has loaded."""
    for frame in page.frames:
        if url_part in frame.url:
            return frame
    raise AssertionError(f"no frame with {url_part!r} in {[f.url for f in page.frames]}")


@pytest.mark.browser
def test_the_embedded_form_works_inside_another_sites_frame(mailer_server, browser):  # noqa: F811
    base = mailer_server.base_url
    address = f"embed.{uuid.uuid4().hex[:10]}@example.nl"
    frames = {"/": f"{base}/gids/mini-guide/embed", "/oud": f"{base}/gids/bestaat-niet/embed"}
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="nl-NL")
    page = context.new_page()
    with mailer_server.log_on_failure(), host_site(frames) as host:
        assert not host.startswith(base)
        page.goto(host + "/")
        form = page.frame_locator("iframe[title='Mini guide aanvragen']")
        expect(form.get_by_label("E-mailadres")).to_be_visible()
        assert frame_of(page, "/gids/mini-guide/embed").evaluate(LINKS_THAT_STAY) == []

        # The privacy link opens the statement in a tab of its own; the host page stays as it was.
        with context.expect_page() as opened:
            form.get_by_role("link", name="Lees de privacyverklaring").click()
        statement = opened.value
        statement.wait_for_load_state()
        assert statement.url == base + "/privacy"
        expect(statement.locator("h1")).to_have_text("Privacyverklaring")
        expect(statement.locator("main")).to_contain_text("Autoriteit Persoonsgegevens")
        statement.close()
        assert page.url == host + "/"

        # An empty form comes back inside the frame, in the embed's look, its links still leaving it.
        form.locator("button[type=submit]").click()
        expect(form.locator(".alert")).to_be_visible()
        assert frame_of(page, "/gids/mini-guide/embed").evaluate(LINKS_THAT_STAY) == []

        # A signup completes inside the frame: the thanks page shows there, in the embed's look.
        form.get_by_label("Voornaam").fill("Fenna")
        form.get_by_label("E-mailadres").fill(address)
        form.locator("#marketing").check()
        form.locator("button[type=submit]").click()
        expect(form.locator("h1")).to_have_text("Kijk in je mailbox")
        thanks = frame_of(page, "/gids/mini-guide/bedankt?embed=1")
        assert page.url == host + "/"
        assert thanks.locator(".card").count() == 0, "the thanks page in the frame has the landing page's card"
        assert thanks.locator("footer a[href='/privacy']").count() == 1
        assert thanks.evaluate(LINKS_THAT_STAY) == []
        confirm_mail = mailer_server.wait_for_mail(1)
        assert confirm_mail["To"].addresses[0].addr_spec == address
        assert mailer_server.sql("SELECT form FROM consent_events") == [("embed:mini-guide",)]

        # An error inside the frame (a magnet since removed) is shown there, not refused, and
        # its link leaves the frame too.
        page.goto(host + "/oud")
        broken = page.frame_locator("iframe[title='Mini guide aanvragen']")
        expect(broken.locator("h1")).to_have_text("Pagina niet gevonden")
        gone = frame_of(page, "/gids/bestaat-niet/embed")
        assert gone.evaluate(LINKS_THAT_STAY) == []
        with context.expect_page() as opened:
            broken.get_by_role("link", name="Naar de startpagina").click()
        home = opened.value
        home.wait_for_load_state()
        assert home.url == base + "/"
        expect(home.locator("main form")).to_be_visible()
    context.close()
