"""Newsletter files: the +++ header, its fields and the [audience] filters; every error names the
file and the field. And the Markdown: links rewritten, headings under the greeting, buttons."""

from __future__ import annotations

from datetime import date

import pytest

from mailer.content.markdown import plain_links, render
from mailer.content.newsletters import Audience, load_newsletter, starter
from mailer.errors import ContentError

LINKS = {"website": "https://www.example.nl", "gesprek": "https://www.example.nl/kennismaken"}
MAGNETS = {"mini-guide": object()}

GOOD_HEADER = '''subject = "Nieuws"
preheader = "Iets om naar uit te kijken"
public = false
'''


def write(tmp_path, header: str = GOOD_HEADER, body: str = "Hallo.\n", name: str = "lente.md"):
    path = tmp_path / name
    path.write_text(f"+++\n{header}+++\n{body}", encoding="utf-8")
    return path


def load(path):
    return load_newsletter(path, LINKS, MAGNETS)


def test_a_good_file_loads_with_its_fields_and_audience(tmp_path):
    path = write(tmp_path, GOOD_HEADER + '''from = "Els <els@example.nl>"
reply_to = "els@example.nl"
[audience]
magnet = "mini-guide"
signed_up_after = 2026-01-01
signed_up_before = "2026-06-01"
downloaded = false
clicked = "website"
not_clicked = ["gesprek"]
sequence = "finished"
''', "Zie [de site](link('website')).\n")
    newsletter = load(path)
    assert (newsletter.slug, newsletter.subject, newsletter.preheader, newsletter.public) == \
        ("lente", "Nieuws", "Iets om naar uit te kijken", False)
    assert (newsletter.sender, newsletter.reply_to) == ("Els <els@example.nl>", "els@example.nl")
    assert newsletter.audience == Audience(("mini-guide",), date(2026, 1, 1), date(2026, 6, 1), False,
                                           ("website",), ("gesprek",), "finished")
    assert newsletter.click_sequence == "newsletter:lente"


def test_the_starter_file_is_valid_as_written(tmp_path):
    path = tmp_path / "nieuw.md"
    path.write_text(starter("nieuw", LINKS), encoding="utf-8")
    assert load(path).audience == Audience()
    path.write_text(starter("nieuw", {}), encoding="utf-8")  # an organisation without [links]
    assert load_newsletter(path, {}, MAGNETS).subject


@pytest.mark.parametrize("header, body, field", [
    (GOOD_HEADER.replace('subject = "Nieuws"\n', ""), "x\n", "'subject'"),
    (GOOD_HEADER.replace('subject = "Nieuws"', 'subject = ""'), "x\n", "'subject'"),
    (GOOD_HEADER.replace('preheader = "Iets om naar uit te kijken"\n', ""), "x\n", "'preheader'"),
    (GOOD_HEADER.replace("public = false", 'public = "ja"'), "x\n", "'public'"),
    (GOOD_HEADER + 'subjet = "typo"\n', "x\n", "'subjet'"),
    (GOOD_HEADER + 'from = "geen adres"\n', "x\n", "'from'"),
    (GOOD_HEADER + 'reply_to = "nee"\n', "x\n", "'reply_to'"),
    (GOOD_HEADER, "   \n", "'body'"),
    (GOOD_HEADER, "Zie [x](link('bestaat-niet')).\n", "'body'"),
    (GOOD_HEADER, "Zie [x](link('url-1')).\n", "'body'"),
    (GOOD_HEADER + "[audience]\nmagnet = \"andere\"\n", "x\n", "'audience.magnet'"),
    (GOOD_HEADER + "[audience]\nsigned_up_after = \"gisteren\"\n", "x\n", "'audience.signed_up_after'"),
    (GOOD_HEADER + "[audience]\nsigned_up_after = 2026-06-01\nsigned_up_before = 2026-01-01\n", "x\n",
     "'audience.signed_up_before'"),
    (GOOD_HEADER + "[audience]\ndownloaded = \"ja\"\n", "x\n", "'audience.downloaded'"),
    (GOOD_HEADER + "[audience]\nclicked = \"onbekend\"\n", "x\n", "'audience.clicked'"),
    (GOOD_HEADER + "[audience]\nnot_clicked = [1]\n", "x\n", "'audience.not_clicked'"),
    (GOOD_HEADER + "[audience]\nsequence = \"half\"\n", "x\n", "'audience.sequence'"),
    (GOOD_HEADER + "[audience]\nmagnets = \"mini-guide\"\n", "x\n", "'audience.magnets'"),
    (GOOD_HEADER + "audience = 3\n", "x\n", "'audience'"),
])
def test_a_broken_file_names_the_file_and_the_field(tmp_path, header, body, field):
    path = write(tmp_path, header, body)
    with pytest.raises(ContentError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: field {field}"), str(caught.value)


@pytest.mark.parametrize("text, problem", [
    ("subject = 'x'\n", "must start with a line '+++'"),
    ("+++\nsubject = 'x'\n", "no closing line '+++'"),
    ("+++\nsubject = \n+++\nx\n", "not valid TOML"),
])
def test_a_file_without_a_proper_header_says_so(tmp_path, text, problem):
    path = tmp_path / "lente.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContentError) as caught:
        load(path)
    assert str(caught.value).startswith(str(path)) and problem in str(caught.value)


def test_the_file_name_must_be_a_slug(tmp_path):
    with pytest.raises(ContentError, match="slug"):
        load(write(tmp_path, name="Lente Nieuws.md"))


def test_markdown_links_headings_buttons_and_text():
    body = ("Lees [dit](https://a.example/x) en [de site](link('website')), mail [ons](mailto:a@b.nl).\n\n"
            "# Kop\n\n## Sub\n\n- een <https://b.example/>\n- twee\n\n[Doe mee](https://a.example/x)\n")
    assert plain_links(body) == ("https://a.example/x", "https://b.example/")
    parts, text = render(body, lambda href: f"R({href})")
    html = "".join(part.html for part in parts)
    assert 'href="R(https://a.example/x)"' in html and "href=\"R(link('website'))\"" in html
    assert 'href="R(mailto:a@b.nl)"' in html
    assert "<h2>Kop</h2>" in html and "<h3>Sub</h3>" in html and "<h1>" not in html
    assert [part.button for part in parts if part.button] == [("R(https://a.example/x)", "Doe mee")]
    assert "Lees dit (R(https://a.example/x)) en de site (R(link('website')))" in text
    assert "- een R(https://b.example/)" in text
    assert text.rstrip().endswith("Doe mee:\nR(https://a.example/x)")


def test_raw_html_in_markdown_is_not_passed_through():
    parts, _ = render("<script>alert(1)</script> en <b>vet</b>\n", lambda href: href)
    html = "".join(part.html for part in parts)
    assert "<script>" not in html and "<b>" not in html
