"""Every HTML mail the content defines, as Chromium draws it: on a small phone (320 px) and at
the width of a desktop mail pane (600 px) it never scrolls sideways, and axe-core
(tests/browser/vendor/axe.min.js) finds no accessibility violations in it.

The mails are rendered by the mailer's own renderer (CSS inlined, a name and links filled in),
so what is checked is what a recipient's client receives.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import sync_playwright

from axe_check import violations
from mailer.delivery.kinds import KINDS
from mailer.delivery.rendering import Recipient

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
WIDTHS = (320, 600)

SIDEWAYS = """() => ({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  widest: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth)
    .slice(0, 3).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''))})"""


def render_all(services) -> dict[str, str]:
    """name -> HTML of every mail of every kind the content defines, for one recipient."""
    recipient = Recipient(7, "zoe@example.nl", "Zoë")
    return {f"{ref.kind}:{ref.step or ref.magnet}": services.renderer.render(ref, recipient).html
            for kind in KINDS.values() for ref in kind.refs(services.content)}


@pytest.mark.browser
def test_every_mail_fits_a_phone_and_passes_axe(chromium_path, make_services, sqlite_url):
    mails = render_all(make_services(sqlite_url))
    failures = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": 800})
                for name, html in mails.items():
                    page.set_content(html)
                    fit = page.evaluate(SIDEWAYS)
                    if fit["scrollWidth"] > fit["innerWidth"]:
                        failures.append(f"{name} at {width} px scrolls sideways: {fit}")
                    found = violations(page)
                    if found:
                        failures.append(f"{name} at {width} px, axe-core:\n{json.dumps(found, indent=2)}")
                page.close()
        finally:
            browser.close()
    assert not failures, "\n".join(failures)
