"""The public newsletter archive (/nieuwsbrief/): only public newsletters whose campaign started,
each page without personal parts or tracked links, a valid Atom feed, and the mail's browser link."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from conftest import START

from mailer.delivery.kinds import newsletter_ref
from mailer.delivery.rendering import Recipient
from mailer.operator import campaigns
from mailer.resources import shipped
from mailer.store.tables import Campaign, CampaignStatus
from mailer.web import create_app

ATOM = "{http://www.w3.org/2005/Atom}"

LETTER = '''+++
subject = "{subject}"
preheader = "{preheader}"
public = {public}
+++
Het nieuws van deze maand, met [ons verhaal](https://www.example.nl/verhaal).

[Plan een kennismaking](link('gesprek'))
'''


@pytest.fixture
def content(tmp_path):
    folder = tmp_path / "content"
    shutil.copytree(shipped("content"), folder)
    letters = folder / "newsletters"
    for slug, subject, public in (("zomer", "Nieuws voor de zomer", "true"), ("herfst", "Herfstnieuws", "true"),
                                  ("intern", "Alleen voor leden", "false"), ("gepland", "Nog niet verstuurd", "true")):
        (letters / f"{slug}.md").write_text(LETTER.format(subject=subject, preheader=f"Kort: {subject}.",
                                                          public=public), encoding="utf-8")
    return folder


@pytest.fixture
def built(make_services, sqlite_url, content):
    """Campaigns scheduled and (all but "gepland") frozen at their start, then left in a status."""
    built = make_services(sqlite_url, MAILER_CONTENT_PATH=str(content), MAILER_BASE_URL="https://mail.example.nl")
    for slug, status, days in (("zomer", CampaignStatus.DONE, 0), ("herfst", CampaignStatus.SENDING, 30),
                               ("intern", CampaignStatus.DONE, 40), ("gepland", CampaignStatus.SCHEDULED, 50),
                               ("voorbeeld", CampaignStatus.CANCELLED, 60)):
        start = START + timedelta(days=days)
        view = campaigns.schedule(built.db, built.content, slug, now=START, start_at=start, no_test=True)
        if status is not CampaignStatus.SCHEDULED:
            assert campaigns.freeze(built.db, built.content, built.renderer, view.id, now=start) == ""
        with built.db.transaction() as session:
            session.get(Campaign, view.id).status = status.value
    return built


@pytest.fixture
def web(built):
    app = create_app(services=built)
    app.config["TESTING"] = True
    return app.test_client()


def test_the_list_shows_public_sent_newsletters_newest_first(web):
    page = web.get("/nieuwsbrief/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'lang="nl"' in html and "<h1>Nieuwsbrieven</h1>" in html
    assert html.index("Herfstnieuws") < html.index("Nieuws voor de zomer")  # newest first
    assert 'href="/nieuwsbrief/herfst"' in html and 'href="/nieuwsbrief/zomer"' in html
    # not public; public but only scheduled; public but its only campaign cancelled
    for absent in ("Alleen voor leden", "Nog niet verstuurd", "Nieuws van het trainingsbureau"):
        assert absent not in html


@pytest.mark.parametrize("slug", ["intern", "gepland", "voorbeeld", "bestaat-niet"])
def test_a_newsletter_outside_the_archive_is_not_found(web, slug):
    assert web.get(f"/nieuwsbrief/{slug}").status_code == 404


def test_the_page_has_no_personal_parts_and_no_tracked_links(web, built):
    page = web.get("/nieuwsbrief/zomer")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Nieuws voor de zomer</h1>" in html
    assert "Het nieuws van deze maand" in html and "Hartelijke groet" in html
    assert "Hallo" not in html  # no greeting by name
    assert "/afmelden" not in html and "afmeld" not in html.lower()  # no unsubscribe link
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert "https://www.example.nl/verhaal" in hrefs  # a plain link: its target
    assert built.content.organisation.links["gesprek"] in hrefs  # a named link: the organisation's address
    assert not [href for href in hrefs if "/k/" in href or "mailer.invalid" in href or "link(" in href], hrefs


def test_the_feed_is_atom_with_the_entries(web):
    response = web.get("/nieuwsbrief/feed.xml")
    assert response.status_code == 200
    assert response.mimetype == "application/atom+xml"
    feed = ET.fromstring(response.get_data())
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}id") == "https://mail.example.nl/nieuwsbrief/"
    assert feed.findtext(f"{ATOM}updated") == (START + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Herfstnieuws", "Nieuws voor de zomer"]
    first = entries[0]
    assert first.findtext(f"{ATOM}id") == "https://mail.example.nl/nieuwsbrief/herfst"
    assert first.find(f"{ATOM}link").get("href") == "https://mail.example.nl/nieuwsbrief/herfst"
    assert first.findtext(f"{ATOM}summary") == "Kort: Herfstnieuws."
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first.findtext(f"{ATOM}updated"))


def test_the_mail_of_a_public_newsletter_links_to_its_page(built):
    mail = built.renderer.render(newsletter_ref(built.content, "zomer"), Recipient(1, "anne@example.nl", "Anne"))
    page = "https://mail.example.nl/nieuwsbrief/zomer"
    assert f'href="{page}"' in mail.html and "Bekijk deze e-mail in je browser" in mail.html
    assert page in mail.text
    private = built.renderer.render(newsletter_ref(built.content, "intern"), Recipient(1, "anne@example.nl", "Anne"))
    assert "/nieuwsbrief/intern" not in private.html + private.text
    assert "in je browser" not in private.html + private.text
