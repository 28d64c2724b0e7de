"""The privacy statement (/privacy, AVG art. 13) and what the answer pages promise.

The statement names who is responsible, what is stored, why and on which basis, for how long
(figures from the settings that enforce them), who processes the data and the visitor's
rights; an operator replaces it with a file in the content folder; and the text as shown is
part of the consent evidence of every signup, with its version.
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import tomllib

import pytest
from conftest import Visitor, form_tokens
from sqlalchemy import select

from mailer.errors import ContentError
from mailer.resources import shipped
from mailer.store.tables import ConsentEvent, ConsentNotice
from mailer.web import create_app

ORGANISATION = tomllib.loads((shipped("content") / "organisation.toml").read_text(encoding="utf-8"))


def client_of(services):
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app.test_client()


def main_text(page: str) -> str:
    """The text of the page's <main>, as a reader sees it: tags gone, whitespace single."""
    main = re.search(r"<main>(.*)</main>", page, re.DOTALL)
    assert main, "the page has no <main>"
    inline = re.sub(r"</?(a|span)\b[^>]*>", "", main[1])  # a link is part of its sentence
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def statement_of(services) -> tuple[str, str]:
    """The /privacy page: its HTML and the text of its <main>."""
    page = client_of(services).get("/privacy")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    return body, main_text(body)


def test_the_statement_says_who_what_why_how_long_who_else_and_the_rights(make_services, sqlite_url):
    body, text = statement_of(make_services(sqlite_url))
    # Who is responsible, and how to reach them.
    for value in (ORGANISATION["name"], ORGANISATION["postal_address"], ORGANISATION["privacy_contact"]):
        assert value in text
    assert f'href="mailto:{ORGANISATION["privacy_contact"]}"' in body
    # Purposes and their bases: the visitor's request for the guide, consent for follow-up mail.
    assert "jouw eigen verzoek" in text and "artikel 6, lid 1, onder b AVG" in text
    assert "toestemming (artikel 6, lid 1, onder a AVG" in text
    assert "altijd intrekken, net zo makkelijk als je hem gaf" in text
    # Exactly what is stored.
    for item in ("voornaam", "e-mailadres", "het tijdstip", "IP-adres", "user agent",
                 "de tekst die je bij het formulier zag", "wanneer je de gids downloadde",
                 "met de naam van de link", "de antwoorden van de mailserver"):
        assert item in text, item
    # Who processes it on the operator's behalf: from organisation.toml.
    for processor in ORGANISATION["privacy"]["processors"]:
        assert processor in text
    # The rights, how to use them, and the supervisory authority.
    for right in ("inzage", "rectificatie", "verwijdering", "bezwaar", "toestemming voor vervolgmails in te trekken",
                  "overdraagbaarheid"):
        assert right in text, right
    assert f"mail dan naar {ORGANISATION['privacy_contact']}" in text
    assert "Autoriteit Persoonsgegevens" in text
    assert 'href="https://www.autoriteitpersoonsgegevens.nl"' in body
    # What unsubscribing keeps and erasure leaves.
    assert "het bewijs van je toestemming en je afmelding bewaren we dan nog wel" in text
    assert "keyed hash" in text
    assert f"versie {ORGANISATION['privacy']['version']}" in text


def test_the_retention_figures_are_the_settings_that_enforce_them(make_services, sqlite_url, tmp_path):
    _, shipped_text = statement_of(make_services(sqlite_url))
    assert "30 dagen na je laatste aanvraag" in shipped_text  # the defaults
    assert "bevestigen werkt 7 dagen" in shipped_text and "downloaden 30 dagen" in shipped_text

    content = tmp_path / "content"
    shutil.copytree(shipped("content") / "magnets", content / "magnets")
    magnet = content / "magnets" / "mini-guide.toml"
    source = magnet.read_text(encoding="utf-8")
    assert "link_max_age_days = 30" in source
    magnet.write_text(source.replace("link_max_age_days = 30", "link_max_age_days = 14").replace(
        'file = "../guides/', f'file = "{shipped("content") / "guides"}/'), encoding="utf-8")
    services = make_services(sqlite_url, MAILER_PENDING_MAX_AGE_DAYS="45", MAILER_CONFIRM_MAX_AGE_DAYS="3",
                             MAILER_CONTENT_PATH=str(content))
    _, text = statement_of(services)
    assert "45 dagen na je laatste aanvraag" in text and "30 dagen na" not in text
    assert "bevestigen werkt 3 dagen" in text and "downloaden 14 dagen" in text


def test_a_signup_stores_the_statement_as_shown_with_its_version(make_services, database_url, clock):
    services = make_services(database_url)
    _, shown = statement_of(services)
    Visitor(client_of(services), clock).sign_up("anne@example.nl")

    later = make_services(database_url, MAILER_PENDING_MAX_AGE_DAYS="60")
    Visitor(client_of(later), clock).sign_up("bram@example.nl")

    with services.db.read_only() as session:
        stored = session.execute(
            select(ConsentNotice.version, ConsentNotice.sha256, ConsentNotice.text)
            .join(ConsentEvent, ConsentEvent.notice_id == ConsentNotice.id).order_by(ConsentEvent.id)).all()
    assert len(stored) == 2
    (version, digest, text), (_, later_digest, later_text) = stored
    assert version == ORGANISATION["privacy"]["version"]
    assert digest == hashlib.sha256(text.encode()).hexdigest()
    notice = services.content.organisation.notice
    assert text.startswith(f"{notice.marketing_label}\n\n{notice.text}\n\n")
    # The statement part is the page's text: the same words, whitespace and list marks aside.
    statement = text.split("\n\n", 2)[2]
    assert " ".join(statement.replace("\n- ", "\n").split()) == shown
    # Another retention setting is another text, so another notice.
    assert later_digest != digest and "60 dagen na je laatste aanvraag" in later_text


def test_an_operators_own_statement_replaces_the_shipped_one(make_services, sqlite_url, clock, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    (content / "privacy.md").write_text(
        "<!-- Ours, in short. -->\n"
        "# Onze privacy\n\n"
        "Wij, {organisation}, bewaren een onbevestigde aanmelding {pending_max_age_days} dagen.\n"
        "Vragen: {privacy_contact}.\n\n"
        "## Wie helpt\n\n"
        "Wij werken met {processors}.\n\n"
        "- {processors}\n", encoding="utf-8")
    services = make_services(sqlite_url, MAILER_CONTENT_PATH=str(content))
    body, text = statement_of(services)
    assert "<h1>Onze privacy</h1>" in body and "<h2>Wie helpt</h2>" in body
    assert (f"Wij, {ORGANISATION['name']}, bewaren een onbevestigde aanmelding 30 dagen. "
            f"Vragen: {ORGANISATION['privacy_contact']}.") in text
    assert "Ours, in short" not in body and "Autoriteit Persoonsgegevens" not in body

    Visitor(client_of(services), clock).sign_up("anne@example.nl")
    with services.db.read_only() as session:
        [stored] = session.scalars(select(ConsentNotice.text)).all()
    first, second = ORGANISATION["privacy"]["processors"]  # the example names two
    assert stored.endswith("Onze privacy\n\nWij, Trainingsbureau Voorbeeld, bewaren een onbevestigde aanmelding "
                           f"30 dagen. Vragen: privacy@example.nl.\n\nWie helpt\n\nWij werken met {first} en "
                           f"{second}.\n\n- {first}\n- {second}")


@pytest.mark.parametrize("statement, message", [
    ("# Privacy\n\nWe bewaren alles {bewaartermijn} dagen.\n", r"privacy.md: line 3: unknown placeholder \{bewaartermijn\}"),
    ("## Eerst\n\n# Dan de titel\n", r"privacy.md: line 3: a '# ' title comes once, at the top"),
    ("# Privacy\n\n<!-- nooit gesloten\n", r"privacy.md: a comment \(<!--\) is not closed"),
    ("<!-- alleen uitleg -->\n", r"privacy.md: the privacy statement is empty"),
])
def test_a_bad_statement_stops_the_start_naming_file_and_line(make_services, sqlite_url, tmp_path, statement, message):
    content = tmp_path / "content"
    content.mkdir()
    (content / "privacy.md").write_text(statement, encoding="utf-8")
    with pytest.raises(ContentError, match=message):
        make_services(sqlite_url, MAILER_CONTENT_PATH=str(content))


def test_the_processors_are_required_in_organisation_toml(make_services, sqlite_url, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    source = (shipped("content") / "organisation.toml").read_text(encoding="utf-8")
    without = re.sub(r"\nprocessors = \[.*?\]\n", "\n", source, flags=re.DOTALL)
    assert without != source
    (content / "organisation.toml").write_text(without, encoding="utf-8")
    with pytest.raises(ContentError, match=r"organisation.toml: field 'privacy.processors' must name at least one"):
        make_services(sqlite_url, MAILER_CONTENT_PATH=str(content))


def test_the_short_notice_names_the_box_not_where_it_is(make_services, sqlite_url):
    client = client_of(make_services(sqlite_url))
    notice = ORGANISATION["privacy"]["notice"]
    assert "hierboven" not in notice and "het vakje" in notice
    for path in ("/", "/gids/mini-guide/embed", "/privacy"):
        page = client.get(path).get_data(as_text=True)
        assert "hierboven" not in page, path


# --- what the answer pages promise: the same words for every address, true for each ------

def test_the_thanks_page_promises_no_mail_that_might_not_come(make_services, sqlite_url, clock):
    """The same words answer a new, pending, confirmed (guide again, or a consent mail),
    unsubscribed (a new confirmation) or undeliverable (nothing) address, and a capped one."""
    client = client_of(make_services(sqlite_url))
    visitor = Visitor(client, clock)
    answer = visitor.sign_up("nieuw@example.nl")
    assert answer.status_code == 303
    text = main_text(client.get(answer.headers["Location"]).get_data(as_text=True))
    assert "Als alles klopt, krijg je binnen enkele minuten een e-mail van ons." in text
    assert "Vragen we je daarin iets te bevestigen" in text  # not every mail asks for a confirmation
    assert not re.search(r"(?<!klopt, )krijg je binnen enkele minuten een e-mail", text)
    assert "Had je je aanvraag al eerder bevestigd" not in text  # untrue for an unsubscribed address


def test_asking_for_a_new_link_has_its_own_answer_the_same_for_every_address(make_services, sqlite_url, clock):
    services = make_services(sqlite_url)
    client = client_of(services)
    Visitor(client, clock).sign_up("bekend@example.nl")
    invalid = client.get("/download/niet-echt").get_data(as_text=True)
    answers = []
    for address in ("bekend@example.nl", "onbekend@example.nl"):
        response = client.post("/gids/mini-guide/nieuwe-link", data={"email": address, **form_tokens(invalid)})
        assert response.status_code == 303
        answers.append(response.headers["Location"])
    assert answers[0] == answers[1] and "bedankt" not in answers[0]
    page = client.get(answers[0])
    assert page.status_code == 200
    text = main_text(page.get_data(as_text=True))
    assert "Als je e-mailadres bij ons bekend is, krijg je binnen enkele minuten een e-mail met een nieuwe link" in text
    assert "bevestigen" not in text
