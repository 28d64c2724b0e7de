"""The form's protections: CSRF, honeypot, speed check, rate limit, validation. Never a 500."""

from __future__ import annotations

from conftest import Visitor, form_tokens
from markupsafe import escape
from sqlalchemy import func, select

from mailer.funnel.addresses import clean_name
from mailer.store.tables import Lead, Outbox
from mailer.web import create_app


def leads(services) -> int:
    with services.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(Lead))


def test_an_invalid_email_gets_the_form_back_with_a_message_and_the_values(services, visitor):
    response = visitor.sign_up("anne@", first_name="Anne")
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Dit e-mailadres lijkt niet te kloppen" in body
    assert 'value="Anne"' in body and 'value="anne@"' in body
    assert 'aria-invalid="true" aria-describedby="email-error"' in body
    assert leads(services) == 0


def test_missing_fields_are_named(services, visitor):
    body = visitor.sign_up("", first_name="").get_data(as_text=True)
    assert "Vul je voornaam in." in body and "Vul je e-mailadres in." in body


def test_a_post_without_csrf_token_gets_the_form_back_not_an_error(services, client):
    response = client.post("/gids/mini-guide", data={"first_name": "Bram", "email": "bram@example.nl"})
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Het formulier was verlopen" in body
    assert 'value="bram@example.nl"' in body
    assert form_tokens(body).get("csrf_token")  # a fresh token to try again with
    assert leads(services) == 0


def test_the_honeypot_answers_like_success_and_stores_nothing(services, visitor):
    response = visitor.sign_up("bot@example.nl", website="http://spam.example")
    assert response.status_code == 303 and response.headers["Location"].endswith("/bedankt")
    assert leads(services) == 0


def test_a_submit_faster_than_a_person_gets_the_form_back(services, client, clock):
    page = client.get("/gids/mini-guide")
    clock.advance(seconds=0.5)
    data = {**form_tokens(page.get_data(as_text=True)), "first_name": "Snel", "email": "snel@example.nl"}
    response = client.post("/gids/mini-guide", data=data)
    assert response.status_code == 400
    assert "Dat ging wel erg snel" in response.get_data(as_text=True)
    assert leads(services) == 0
    # The page it got back carries a new timestamp; a person who waits gets through.
    data.update(form_tokens(response.get_data(as_text=True)))
    clock.advance(seconds=3)
    assert client.post("/gids/mini-guide", data=data).status_code == 303


def test_a_forged_timestamp_is_treated_as_too_fast(services, visitor):
    response = visitor.sign_up("vals@example.nl", started="12345")
    assert response.status_code == 400 and leads(services) == 0


def test_the_name_is_stripped_of_control_characters_and_limited():
    assert clean_name("  Anne\x00\u202e Marie\r\n ") == "Anne Marie"
    assert clean_name("Jan\r\nBcc: x") == "Jan Bcc: x"  # a control character becomes a space
    assert clean_name("Zoë\u200b") == "Zoë"  # an invisible (format) character goes
    assert clean_name(" \t\r\n\x00 ") == ""  # the form refuses this; an import keeps the name empty
    assert len(clean_name("x" * 500)) == 100


def test_a_name_with_markup_is_stored_as_text_and_escaped_in_pages(services, visitor, client):
    visitor.sign_up("html@example.nl", first_name="<script>alert(1)</script>")
    with services.db.read_only() as session:
        assert session.scalar(select(Lead.first_name)) == "<script>alert(1)</script>"


def test_the_rate_limit_per_ip_answers_429_with_a_friendly_page(make_services, database_url, clock):
    services = make_services(database_url, MAILER_SIGNUP_RATE_LIMIT="3 per minute")
    visitor = Visitor(create_app(services=services).test_client(), clock)
    answers = [visitor.sign_up(f"veel{i}@example.nl").status_code for i in range(4)]
    assert answers == [303, 303, 303, 429]
    last = visitor.sign_up("nog-een@example.nl")
    assert "Even geduld" in last.get_data(as_text=True) and last.headers["Retry-After"] == "60"
    assert leads(services) == 3


def test_an_unknown_magnet_is_a_404_page(services, client):
    response = client.get("/gids/bestaat-niet")
    assert response.status_code == 404 and "Pagina niet gevonden" in response.get_data(as_text=True)


def test_the_landing_page_offers_the_guide_with_an_unticked_box_and_the_notice(services, client):
    body = client.get("/").get_data(as_text=True)
    assert "Met vertrouwen, gezond en fit door de crisis" in body
    assert 'type="checkbox" id="marketing" name="marketing" value="y" >' in body  # not checked
    assert '<label for="first_name">' in body and '<label for="email">' in body
    assert escape(services.content.organisation.notice.marketing_label) in body


def test_the_embeddable_form_may_be_framed_and_works_without_our_cookie(services, app, clock):
    page = app.test_client().get("/gids/mini-guide/embed")
    assert "X-Frame-Options" not in page.headers
    assert app.test_client().get("/").headers["X-Frame-Options"] == "DENY"
    data = {**form_tokens(page.get_data(as_text=True)), "first_name": "Ria", "email": "ria@example.nl"}
    assert set(data) == {"started", "first_name", "email"}  # no session-bound CSRF token
    clock.advance(seconds=5)
    # Inside an iframe on another site the browser withholds our session cookie: a fresh client.
    response = app.test_client().post("/gids/mini-guide/embed", data=data)
    assert response.status_code == 303 and response.headers["Location"].endswith("/bedankt?embed=1")
    with services.db.read_only() as session:
        assert session.scalar(select(Outbox.kind)) == "confirm"


def test_the_embedded_form_still_refuses_a_post_without_its_signed_timestamp(services, app):
    response = app.test_client().post("/gids/mini-guide/embed", data={"first_name": "X", "email": "x@example.nl"})
    assert response.status_code == 400 and leads(services) == 0


def test_the_rate_limit_is_shared_between_processes_through_redis(make_services, database_url, clock,
                                                                   redis_url):
    url = redis_url
    # Two app instances stand for two gunicorn workers on different hosts.
    visitors = [
        Visitor(create_app(services=make_services(database_url, MAILER_RATELIMIT_STORAGE_URL=url,
                                                  MAILER_SIGNUP_RATE_LIMIT="3 per minute")).test_client(), clock)
        for _ in range(2)
    ]
    answers = [visitors[n % 2].sign_up(f"gedeeld{n}@example.nl").status_code for n in range(4)]
    assert answers == [303, 303, 303, 429]


def test_an_international_domain_is_stored_in_ascii_and_a_non_ascii_mailbox_is_refused(services, visitor):
    assert visitor.sign_up("Jan@Bücher.de").status_code == 303
    with services.db.read_only() as session:
        assert session.scalar(select(Lead.email)) == "jan@xn--bcher-kva.de"
    refused = visitor.sign_up("jän@example.nl")
    body = refused.get_data(as_text=True)
    # Not "looks wrong": the address is fine, we cannot carry it (no SMTPUTF8 at every relay).
    assert refused.status_code == 400 and "lijkt niet te kloppen" not in body
    assert str(escape("Adressen met letters als é of ü vóór de @ kunnen we helaas nog niet verwerken")) in body
    assert 'value="jän@example.nl"' in body and 'aria-describedby="email-error"' in body
    wrong = visitor.sign_up("jän@")  # non-ASCII, and wrong anyway
    assert "lijkt niet te kloppen" in wrong.get_data(as_text=True)
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == 1


def test_a_name_of_only_spaces_or_control_characters_is_refused_with_a_message(services, visitor):
    for name in ("   ", " \r\n\t ", "\x00\x1b", "\u200b\u202e"):
        response = visitor.sign_up("leeg@example.nl", first_name=name)
        body = response.get_data(as_text=True)
        assert response.status_code == 400, repr(name)
        assert "Je voornaam bestaat nu alleen uit spaties of onzichtbare tekens. Vul je voornaam in." in body
        assert 'aria-describedby="first_name-error"' in body
    assert leads(services) == 0


def test_control_characters_inside_a_name_become_a_space(services, visitor):
    from test_funnel import deliver

    assert visitor.sign_up("jan@example.nl", first_name="Jan\r\nBcc: x@example.nl").status_code == 303
    with services.db.read_only() as session:
        assert session.scalar(select(Lead.first_name)) == "Jan Bcc: x@example.nl"
    [mail] = deliver(services)
    assert mail["Bcc"] is None and [a.addr_spec for a in mail["To"].addresses] == ["jan@example.nl"]
    assert "Jan Bcc: x@example.nl" in mail.get_body(("plain",)).get_content()


def test_a_form_left_open_too_long_is_shown_again(services, client, clock):
    page = client.get("/gids/mini-guide")
    clock.advance(hours=13)
    data = {**form_tokens(page.get_data(as_text=True)), "first_name": "Oud", "email": "oud@example.nl"}
    response = client.post("/gids/mini-guide", data=data)
    assert response.status_code == 400 and "Het formulier was verlopen" in response.get_data(as_text=True)
    assert leads(services) == 0


def test_signing_up_over_https_works_with_the_same_origin_referer(services, app, clock):
    client = app.test_client()
    page = client.get("/gids/mini-guide", base_url="https://guide.example.nl")
    assert page.headers["Referrer-Policy"] == "same-origin"
    data = {**form_tokens(page.get_data(as_text=True)), "first_name": "Veilig", "email": "tls@example.nl"}
    clock.advance(seconds=5)
    response = client.post("/gids/mini-guide", data=data, base_url="https://guide.example.nl",
                           headers={"Referer": "https://guide.example.nl/gids/mini-guide"})
    assert response.status_code == 303 and leads(services) == 1


def test_the_thanks_page_after_the_embedded_form_may_be_framed_too(services, client):
    assert "X-Frame-Options" not in client.get("/gids/mini-guide/bedankt?embed=1").headers
    assert client.get("/gids/mini-guide/bedankt").headers["X-Frame-Options"] == "DENY"
