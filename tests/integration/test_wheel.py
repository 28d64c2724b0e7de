"""The built wheel on its own: installed (not editable) into a fresh virtual environment, `mailer
serve` runs from an empty folder with the templates, migrations and content inside the package,
and `mailer init` gives an operator a copy to edit that overrides the shipped files one by one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailer.errors import MailerError
from mailer.operator.setup import CopyRefused, copy_for_editing
from mailer.resources import shipped

ROOT = Path(__file__).resolve().parents[2]
STEP = "lef-en-eigenheid"
SUBJECT = "Waarom LEF en eigenheid ertoe doen bij de overheid"  # content/sequences/mini-guide.toml
LAYOUT_TEXT = "Meld je hier af"  # templates/mail/drip/_layout.html
BODY_TEXT = "twee woorden centraal: LEF en eigenheid"  # templates/mail/drip/mini-guide/03-lef-en-eigenheid.html


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path

    @property
    def mailer(self) -> str:
        return str(self.venv / "bin" / "mailer")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def _run(args, *, cwd=None, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def _env(**settings: str) -> dict[str, str]:
    """The environment without this checkout's traces (no MAILER_* setting, no PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAILER_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, **settings}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", ROOT])
    wheels = list((base / "dist").glob("mailer-*.whl"))
    assert len(wheels) == 1, wheels
    built = time.monotonic()
    venv = base / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0 or not (venv / "bin" / "python").exists():
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip() or made.stdout.strip()}")
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheels[0]], env=_env())
    print(f"wheel built in {built - started:.1f}s, installed in {time.monotonic() - built:.1f}s")
    return Installed(venv, wheels[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 60) -> tuple[int, str]:
    """The first answer from url, while the process runs, within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            pytest.fail(f"mailer serve exited {process.returncode}:\n{log.read_text()}")
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                pytest.fail(f"no answer from {url} within {seconds:g}s:\n{log.read_text()}")
            time.sleep(0.1)


def test_the_wheel_carries_templates_migrations_and_content(installed, tmp_path):
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for name in ("templates/mail/drip/_layout.html", "templates/pages/landing.html", "migrations/env.py",
                 "migrations/versions/0001_leads_consent_evidence_downloads_outbox.py",
                 "content/organisation.toml", "content/magnets/mini-guide.toml",
                 "content/sequences/mini-guide.toml", "content/guides/mini-guide.pdf"):
        assert f"mailer/_shipped/{name}" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The installed package finds them inside itself, not in this checkout.
    found = _run([installed.python, "-c", "from mailer.resources import SHIPPED; print(SHIPPED)"],
                 cwd=tmp_path, env=_env()).stdout.strip()
    assert Path(found).resolve().is_relative_to(installed.venv.resolve())


def test_serve_runs_from_an_empty_folder(installed, tmp_path):
    here = tmp_path / "empty"
    here.mkdir()
    port, log = _free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([installed.mailer, "serve", "--port", str(port)], cwd=here, env=_env(),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        status, page = _wait_for(f"http://127.0.0.1:{port}/", process, log)
        assert status == 200, page
        assert '<html lang="nl">' in page and "Download de mini guide" in page and "Stuur mij de mini guide" in page
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
        assert json.loads(body)["status"] == "ok"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"mailer serve did not stop on SIGTERM:\n{log.read_text()}")
    assert process.returncode == 0, log.read_text()
    assert (here / "instance").is_dir()  # MAILER_INSTANCE_PATH unset: the working folder's instance/


def test_init_gives_a_copy_that_overrides_the_shipped_files(installed, tmp_path):
    here = tmp_path / "work"
    here.mkdir()
    printed = _run([installed.mailer, "init", "site"], cwd=here, env=_env()).stdout
    content, templates = (here / "site" / "content").resolve(), (here / "site" / "templates").resolve()
    lines = printed.splitlines()
    assert f"MAILER_CONTENT_PATH={content}" in lines and f"MAILER_TEMPLATES_PATH={templates}" in lines, printed
    for copy in (content / "organisation.toml", content / "magnets" / "mini-guide.toml",
                 content / "sequences" / "mini-guide.toml", content / "guides" / "mini-guide.pdf",
                 templates / "mail" / "drip" / "_layout.html", templates / "pages" / "landing.html"):
        assert copy.is_file(), copy

    def render(**settings) -> tuple[str, str]:
        printed = _run([installed.mailer, "drip", "render", STEP, "--output", "out.html"],
                       cwd=here, env=_env(**settings)).stdout
        return printed, (here / "out.html").read_text(encoding="utf-8")

    printed, html = render()
    assert f"Subject: {SUBJECT}" in printed and LAYOUT_TEXT in html and BODY_TEXT in html

    layout = templates / "mail" / "drip" / "_layout.html"
    layout.write_text(layout.read_text(encoding="utf-8").replace(LAYOUT_TEXT, "Uitschrijven kan altijd hier"),
                      encoding="utf-8")
    sequence = content / "sequences" / "mini-guide.toml"
    sequence.write_text(sequence.read_text(encoding="utf-8").replace(SUBJECT, "LEF, ook in jouw organisatie"),
                        encoding="utf-8")
    use_copy = {"MAILER_CONTENT_PATH": str(content), "MAILER_TEMPLATES_PATH": str(templates)}

    printed, html = render(**use_copy)
    assert "Subject: LEF, ook in jouw organisatie" in printed, printed
    assert "Uitschrijven kan altijd hier" in html and LAYOUT_TEXT not in html and BODY_TEXT in html

    printed, html = render()  # the installed package itself is untouched
    assert f"Subject: {SUBJECT}" in printed and LAYOUT_TEXT in html

    # A file deleted from the copy comes from the package again; the edited ones stay in force.
    (templates / "mail" / "drip" / "mini-guide" / "03-lef-en-eigenheid.html").unlink()
    printed, html = render(**use_copy)
    assert BODY_TEXT in html and "Uitschrijven kan altijd hier" in html
    assert "Subject: LEF, ook in jouw organisatie" in printed

    again = _run([installed.mailer, "init", "site"], cwd=here, env=_env(), check=False)
    assert again.returncode == 1 and "not empty" in again.stderr, again
    assert "Uitschrijven kan altijd hier" in layout.read_text(encoding="utf-8")


# Without the wheel: the copying itself, from this checkout's shipped files.

def _shipped_files(name: str) -> set[Path]:
    root = shipped(name)
    return {p.relative_to(root) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_copy_for_editing_copies_content_and_templates(tmp_path):
    (tmp_path / "content").mkdir()  # an empty folder is fine
    copied = copy_for_editing(tmp_path)
    assert copied.content == tmp_path.resolve() / "content"
    assert {p.relative_to(copied.content) for p in copied.content.rglob("*") if p.is_file()} \
        == _shipped_files("content")
    assert {p.relative_to(copied.templates) for p in copied.templates.rglob("*") if p.is_file()} \
        == _shipped_files("templates")
    assert len(copied.files) == len(_shipped_files("content")) + len(_shipped_files("templates"))
    assert copied.settings == (f"MAILER_CONTENT_PATH={copied.content}", f"MAILER_TEMPLATES_PATH={copied.templates}")


@pytest.mark.parametrize("edited", ["content/organisation.toml", "templates/mail/drip/_layout.html"])
def test_copy_for_editing_refuses_a_folder_that_is_not_empty(tmp_path, edited):
    (tmp_path / edited).parent.mkdir(parents=True)
    (tmp_path / edited).write_text("mine", encoding="utf-8")
    with pytest.raises(CopyRefused, match="already exists and is not empty") as refused:
        copy_for_editing(tmp_path)
    assert isinstance(refused.value, MailerError)
    assert (tmp_path / edited).read_text(encoding="utf-8") == "mine"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [edited]
