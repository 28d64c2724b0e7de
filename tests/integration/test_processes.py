"""The commands as real processes: serve, worker, tick, and gunicorn serving the web part."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Visitor, form_tokens, free_port, make_env
from sqlalchemy import select

from mailer.clock import utcnow
from mailer.store.tables import Outbox
from mailer.web import create_app

BIN = Path(sys.executable).parent


class Service:
    def __init__(self, args: list[str], env: dict[str, str], cwd: Path):
        self.log = (cwd / f"{Path(args[0]).name}-{id(self)}.log").open("w+")
        self.process = subprocess.Popen(args, env={**os.environ, **env}, cwd=cwd,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        """Poll until the service answers (readiness, not synchronisation of the behaviour under test)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"process exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"{url} not ready after {timeout}s:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture
def run(tmp_path):
    started = []

    def start(args, env):
        service = Service(args, env, tmp_path)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def post_signup(base: str, email: str) -> int:
    """A visitor's browser, minus the browser: fetch the form, then post it with its tokens."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(f"{base}/").read().decode()
    data = urllib.parse.urlencode({**form_tokens(page), "first_name": "Joost", "email": email}).encode()
    with opener.open(f"{base}/gids/mini-guide", data=data) as response:
        return response.status


def test_serve_delivers_the_confirmation_to_smtp_within_five_seconds(run, tmp_path, smtp_server):
    port = free_port()
    env = make_env(tmp_path, MAILER_MAIL_URL=smtp_server.url, MAILER_FORM_MIN_SECONDS="0",
                   MAILER_BASE_URL=f"http://127.0.0.1:{port}")
    service = run([str(BIN / "mailer"), "serve", "--port", str(port)], env)
    service.wait_ready(f"http://127.0.0.1:{port}/healthz")

    posted = time.monotonic()
    assert post_signup(f"http://127.0.0.1:{port}", "snel@example.nl") == 200  # after the 303
    assert smtp_server.wait(1, timeout=5), f"no mail within 5 s:\n{service.output()}"
    assert time.monotonic() - posted < 5
    assert smtp_server.messages[0].rcpt_tos == ["snel@example.nl"]
    assert json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz"))["database"] == "sqlite"
    assert service.stop() == 0
    with sqlite3.connect(tmp_path / "instance" / "mailer.db") as db:
        assert db.execute("SELECT status, attempts FROM outbox").fetchall() == [("sent", 1)]


def test_serve_on_the_embedded_default_logs_each_mail_with_its_links(run, tmp_path):
    port = free_port()
    env = {"MAILER_INSTANCE_PATH": str(tmp_path / "embedded"), "MAILER_FORM_MIN_SECONDS": "0"}
    service = run([str(BIN / "mailer"), "serve", "--port", str(port)], env)
    service.wait_ready(f"http://127.0.0.1:{port}/healthz")
    assert f"open http://127.0.0.1:{port}/" in service.output()
    post_signup(f"http://127.0.0.1:{port}", "kijk@example.nl")

    deadline = time.monotonic() + 5
    while f"http://127.0.0.1:{port}/bevestig/" not in service.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"http://127.0.0.1:{port}/bevestig/" in service.output()
    assert len(list((tmp_path / "embedded" / "mail").glob("*.eml"))) == 1
    assert (tmp_path / "embedded" / "secret_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.postgres
def test_worker_on_postgres_delivers_within_five_seconds_and_stops_cleanly_on_sigterm(
        run, tmp_path, make_services, postgres_url, smtp_server, clock):
    pg = "postgresql://" + postgres_url.split("://", 1)[1]
    env = make_env(tmp_path, MAILER_DATABASE_URL=pg, MAILER_MAIL_URL=smtp_server.url)
    worker = run([str(BIN / "mailer"), "worker"], env)

    services = make_services(postgres_url)
    clock.set(utcnow() - timedelta(seconds=10))  # the worker runs on the real clock; sign_up adds 5 s
    posted = time.monotonic()
    Visitor(create_app(services=services).test_client(), clock).sign_up("pg@example.nl")
    assert smtp_server.wait(1, timeout=5), f"no mail within 5 s:\n{worker.output()}"
    assert time.monotonic() - posted < 5
    assert worker.stop() == 0
    with services.db.read_only() as session:
        assert session.scalar(select(Outbox.status)) == "sent"


def test_tick_runs_the_periodic_work_once_and_says_what_it_did(tmp_path, make_services, sqlite_url, clock):
    services = make_services(sqlite_url)
    Visitor(create_app(services=services).test_client(), clock).sign_up("tik@example.nl")
    env = {**os.environ, **make_env(tmp_path, MAILER_DATABASE_URL=sqlite_url,
                                    MAILER_MAIL_URL=f"file://{tmp_path / 'out'}")}
    later = (clock.now()).isoformat()
    result = subprocess.run([str(BIN / "mailer"), "tick", "--now", later], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "dispatch-outbox: sent 1, deferred 0, failed 0, cancelled 0" in result.stdout
    assert len(list((tmp_path / "out").glob("*.eml"))) == 1

    earlier = subprocess.run([str(BIN / "mailer"), "tick", "--now", "yesterday"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert earlier.returncode == 2 and "not an ISO 8601 time" in earlier.stderr


def test_gunicorn_serves_the_web_part_without_a_scheduler(run, tmp_path, sqlite_url):
    port = free_port()
    env = make_env(tmp_path, MAILER_DATABASE_URL=sqlite_url, MAILER_FORM_MIN_SECONDS="0",
                   MAILER_MAIL_URL=f"file://{tmp_path / 'out'}", MAILER_BASE_URL=f"http://127.0.0.1:{port}")
    web = run([str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "mailer.wsgi:app"], env)
    web.wait_ready(f"http://127.0.0.1:{port}/healthz")
    assert post_signup(f"http://127.0.0.1:{port}", "web@example.nl") == 200
    threads = subprocess.run(
        [sys.executable, "-c", "import sys, threading, mailer.wsgi; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'apscheduler'}), "
         "[t.name for t in threading.enumerate() if 'APScheduler' in t.name])"],
        env={**os.environ, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert threads.stdout.strip() == "[] []", threads.stderr  # not even imported by the web app
    health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz"))
    assert health["outbox"] == {"queued": 1}  # the web part only writes; workers deliver
