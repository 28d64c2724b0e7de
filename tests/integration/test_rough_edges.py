"""Rough edges found by trying it: `mailer serve` on a port in use, and one name for the lead
magnet across the landing page, the mails and the PDF (whose cover and closing page carry the
organisation's name and its trainings, from the content files). The form's messages for names
and addresses are in test_forms.py."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
import zlib
from pathlib import Path

import pytest

from mailer.resources import shipped

# --- mailer serve on a port in use -------------------------------------------------------


def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_non_zero(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "MAILER_INSTANCE_PATH": str(tmp_path / "instance")}
        for name in ("MAILER_DATABASE_URL", "MAILER_MAIL_URL", "MAILER_BASE_URL", "MAILER_CONTENT_PATH",
                     "MAILER_TEMPLATES_PATH"):
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-m", "mailer.cli", "serve", "--port", str(port)],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {port}" in lines[0] and "--port" in lines[0] and "in use" in lines[0]
    assert "mailer is running" not in done.stdout  # nothing was started


# --- one name for the lead magnet --------------------------------------------------------

ESCAPE = re.compile(rb"\\([nrtbf()\\]|[0-7]{1,3})")
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _literal(raw: bytes) -> str:
    """A PDF literal string (the core fonts' Windows-1252) as text."""
    def one(match: re.Match) -> bytes:
        code = match.group(1)
        if code[:1].isdigit():
            return bytes([int(code, 8)])
        return ESCAPES.get(code, code)
    return ESCAPE.sub(one, raw).decode("windows-1252")


def pdf_reading(path: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """The text runs shown on the pages, the link targets and the document properties, read with
    the standard library (the PDF is fpdf2's: core fonts, Flate-compressed page streams)."""
    data = path.read_bytes()
    runs: list[str] = []
    for stream in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S):
        try:
            content = zlib.decompressobj().decompress(stream.group(1))
        except zlib.error:
            continue
        runs += [_literal(raw) for raw in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", content)]
    links = [_literal(raw) for raw in re.findall(rb"/URI \(((?:\\.|[^\\)])*)\)", data)]
    properties = {name.decode(): _literal(raw)
                  for name, raw in re.findall(rb"/(Title|Author|Subject) \(((?:\\.|[^\\)])*)\)", data)}
    return runs, links, properties


def test_the_guide_pdf_carries_the_magnets_title_the_organisation_and_its_trainings():
    content = shipped("content")
    organisation = tomllib.loads((content / "organisation.toml").read_text(encoding="utf-8"))
    magnet = tomllib.loads((content / "magnets" / "mini-guide.toml").read_text(encoding="utf-8"))
    runs, links, properties = pdf_reading((content / "magnets" / magnet["file"]).resolve())
    text = "\n".join(runs)
    title, name = magnet["title"], organisation["name"]

    assert properties == {"Title": title, "Author": name,
                          "Subject": "Een praktische mini guide voor ambtenaren in roerige tijden"}
    # The running footer of every page but the cover: the magnet's title and the organisation.
    footers = sum(run.startswith("Pagina ") for run in runs)
    assert footers >= 5 and runs.count(f"{title} \u00b7 {name}") == footers
    # The cover: "Mini guide" above the title, the organisation and its website at the foot.
    assert runs[0] == "MINI GUIDE"
    assert f"Een uitgave van {name}" in runs and organisation["website"].removeprefix("https://") in runs
    # The closing page points to the trainings: every named link of organisation.toml.
    assert set(links) == set(organisation["links"].values())
    assert "gids" not in text.lower()  # the guide is a "mini guide", as on the page and in the mails


def test_the_page_and_the_mails_call_the_guide_what_the_pdf_calls_it(services, visitor, client):
    from test_funnel import deliver, link_in

    title = services.content.magnets["mini-guide"].title
    page = client.get("/gids/mini-guide").get_data(as_text=True)
    assert f"mini guide ‘{title}’" in page
    visitor.sign_up("anne@gemeente.nl")
    [confirm] = deliver(services)
    assert f"mini guide ‘{title}’" in confirm.get_body(("plain",)).get_content()
    client.post(link_in(confirm, "/bevestig/"))
    [guide] = deliver(services)
    assert guide["Subject"] == f"Je mini guide: {title}"
    download = client.get(link_in(guide, "/download/"))
    assert download.status_code == 200 and download.data.startswith(b"%PDF")
    assert f"/Title ({title})".encode() in download.data


def test_the_pdf_build_takes_its_names_from_the_content_files(tmp_path):
    """An operator's copy with another name and other links rebuilds into a PDF that carries
    them; a guide whose title is not the magnet's is refused."""
    pytest.importorskip("fpdf", reason="fpdf2 (the dev extra) builds the guide")
    import shutil

    content = tmp_path / "content"
    shutil.copytree(shipped("content"), content)
    organisation = content / "organisation.toml"
    organisation.write_text(organisation.read_text(encoding="utf-8")
                            .replace('name = "Trainingsbureau Voorbeeld"', 'name = "Academie Anders"')
                            .replace("https://www.example.nl/ontwikkelprogramma", "https://anders.example/groei"),
                            encoding="utf-8")
    build = subprocess.run([sys.executable, str(content / "guides" / "build_guide.py")],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    runs, links, properties = pdf_reading(content / "guides" / "mini-guide.pdf")
    assert properties["Author"] == "Academie Anders" and "Een uitgave van Academie Anders" in runs
    assert "https://anders.example/groei" in links

    magnet = content / "magnets" / "mini-guide.toml"
    magnet.write_text(magnet.read_text(encoding="utf-8").replace(
        'title = "Met vertrouwen, gezond en fit door de crisis"', 'title = "Een andere titel"'), encoding="utf-8")
    refused = subprocess.run([sys.executable, str(content / "guides" / "build_guide.py")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "is not the magnet's title 'Een andere titel'" in refused.stderr
