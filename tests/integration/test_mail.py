"""What a recipient gets: both parts, the headers, inlined CSS, escaped names, the footer."""

from __future__ import annotations

from datetime import datetime, timezone
from email import message_from_bytes, policy

import pytest

from mailer.delivery.kinds import MailRef
from mailer.delivery.rendering import Recipient, build_message
from mailer.store.tables import MailKind


@pytest.fixture
def rendered(make_services, sqlite_url):
    services = make_services(sqlite_url)

    def render(kind, first_name="Zoë <b>&"):
        recipient = Recipient(7, "zoe@example.nl", first_name)
        mail = services.renderer.render(MailRef(kind, "mini-guide"), recipient)
        data = build_message(sender=services.settings.mail_from, recipient=recipient, mail=mail,
                             message_id="<abc@example.nl>", date=datetime(2026, 12, 1, 9, tzinfo=timezone.utc))
        return mail, message_from_bytes(data, policy=policy.default), data

    return render


@pytest.mark.parametrize("kind", [MailKind.CONFIRM, MailKind.GUIDE])
def test_every_mail_has_text_and_html_parts_and_correct_headers(rendered, kind):
    mail, message, data = rendered(kind)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Date"] == "Tue, 01 Dec 2026 09:00:00 +0000"
    assert message["Message-ID"] == "<abc@example.nl>"
    assert message["From"].addresses[0].addr_spec == "guide@example.nl"
    assert message["To"].addresses[0].display_name == "Zoë <b>&"
    assert b"\r\n" in data and b"\n\n" not in data.replace(b"\r\n", b"")  # CRLF line ends on the wire


def test_names_are_escaped_in_html_and_plain_in_text(rendered):
    mail, message, _ = rendered(MailKind.CONFIRM)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "Zoë &lt;b&gt;&amp;" in html and "<b>&" not in html
    assert "Hallo Zoë <b>&," in text


def test_css_is_inlined_and_the_mail_reads_without_images(rendered):
    mail, message, _ = rendered(MailKind.GUIDE)
    html = message.get_body(("html",)).get_content()
    assert "<style" not in html and 'style="' in html
    assert "<img" not in html


def test_text_and_html_carry_the_same_link_and_the_sender_identity(rendered):
    mail, message, _ = rendered(MailKind.GUIDE)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    link = next(word for word in text.split() if word.startswith("https://guide.example.nl/download/"))
    assert link in html
    for part in (html, text):
        assert "Trainingsbureau Voorbeeld" in part and "Postbus 1234, 3500 AA Utrecht" in part
        assert "privacy@example.nl" in part
    assert "\n-- \n" in text.replace("\r\n", "\n")  # the signature separator mail clients recognise


def test_a_missing_first_name_still_greets(rendered):
    mail, message, _ = rendered(MailKind.CONFIRM, first_name="")
    assert "Hallo daar," in message.get_body(("plain",)).get_content()


def test_the_message_parses_without_defects_and_survives_hostile_values():
    from mailer.delivery.rendering import RenderedMail

    mail = RenderedMail(
        subject="Je gids – ‘Met vertrouwen’ " + "en nog veel meer woorden " * 6,
        text="Regel met spatie aan het eind \n-- \nVoet\n" + "x" * 200 + "\n",
        html="<p>=3D is geen escape, =_mailer_alternative ook niet</p>",
    )
    data = build_message(sender="Trainingsbureau Voorbeeld <guide@example.nl>",
                         recipient=Recipient(1, "a@example.nl", "Eva\r\nBcc: x@evil.example"),
                         mail=mail, message_id="<m@example.nl>", date=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert all(len(line) <= 78 for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"))
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    message = message_from_bytes(data, policy=policy.default)
    assert not message.defects and all(not part.defects for part in message.walk())
    assert " ".join(message["Subject"].split()) == " ".join(mail.subject.split())
    assert message["Bcc"] is None  # the name could not add a header
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == mail.text
    assert message.get_body(("html",)).get_content().replace("\r\n", "\n").rstrip("\n") == mail.html


def test_a_long_non_ascii_name_is_folded_within_the_line_limit():
    from mailer.delivery.rendering import RenderedMail

    name = "Zoë-Émilie van der Straaten-Goedhart de Ruyter ten Brink " * 2
    data = build_message(sender="Trainingsbureau <guide@example.nl>",
                         recipient=Recipient(1, "zoe@example.nl", name.strip()),
                         mail=RenderedMail("Onderwerp", "tekst\n", "<p>tekst</p>"),
                         message_id="<m@example.nl>", date=datetime(2026, 12, 1, tzinfo=timezone.utc))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    to = message_from_bytes(data, policy=policy.default)["To"]
    assert to.addresses[0].display_name == name.strip() and to.addresses[0].addr_spec == "zoe@example.nl"


def test_a_broken_mail_template_stops_the_start_with_its_name(tmp_path, sqlite_url):
    import shutil

    from mailer.content.files import load_content
    from mailer.delivery.rendering import MailRenderer
    from mailer.errors import ContentError
    from mailer.funnel.links import Links
    from mailer.funnel.tokens import Signer
    from mailer.resources import shipped

    templates = tmp_path / "templates"
    shutil.copytree(shipped("templates"), templates)
    (templates / "mail" / "guide.html").write_text("{% extends '_layout.html' %}{% block body %}{{ nope }}{% endblock %}")
    content = load_content(shipped("content"))
    renderer = MailRenderer([templates], content, Links("https://x.example.nl", Signer(("k" * 20,), None)), 7)
    with pytest.raises(ContentError, match="templates/mail/guide.html .*'nope' is undefined"):
        renderer.check()
