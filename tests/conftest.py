"""Shared fixtures: real SQLite files, a real PostgreSQL database, a real SMTP server, a settable clock.

PostgreSQL and Chromium tests skip with a reason where those are absent; with
MAILER_TEST_REQUIRE=postgres,browser (as .ci/run sets) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from mailer.clock import SettableClock
from mailer.resources import shipped
from mailer.services import build_services
from mailer.settings import Settings
from mailer.store.migrate import upgrade
from mailer.store.tables import Base
from mailer.web import create_app

POSTGRES_URL = os.environ.get("MAILER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = set(filter(None, os.environ.get("MAILER_TEST_REQUIRE", "").split(",")))
START = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def unavailable(what: str, reason: str):
    """Skip, or fail when CI made this part mandatory."""
    if what in REQUIRED:
        pytest.fail(f"{what} is required here (MAILER_TEST_REQUIRE) but {reason}")
    pytest.skip(f"{what} not available: {reason}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- databases ---------------------------------------------------------------------------

def _psycopg_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


@pytest.fixture(scope="session")
def postgres_server_url():
    """A fresh PostgreSQL database for this test session, migrated; dropped at the end."""
    try:
        import psycopg
    except ImportError:
        unavailable("postgres", "psycopg is not installed (extra 'dev' or 'postgres')")
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable("postgres", f"cannot connect to {POSTGRES_URL}: {str(exc).strip()[:200]}")
    name = f"mailer_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = _psycopg_url(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name)
    upgrade(url)
    yield url
    admin.close()  # it may have died with a server restart during the session (tests/test_workers.py)
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10) as fresh:
        fresh.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'instance' / 'mailer.db'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_url(postgres_server_url) -> str:
    _truncate(postgres_server_url)
    return postgres_server_url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    """Runs the test once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


# --- settings and services ---------------------------------------------------------------

def make_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "MAILER_INSTANCE_PATH": str(tmp_path / "instance"),
        "MAILER_SECRET_KEY": "test-secret-key-0123456789",
        "MAILER_BASE_URL": "https://guide.example.nl",
        "MAILER_MAIL_URL": "memory:",
        "MAILER_FROM": "Trainingsbureau <guide@example.nl>",
        "MAILER_FORM_MIN_SECONDS": "2",
    }
    env.update(overrides)
    return env


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(START)


@pytest.fixture
def make_services(tmp_path, clock):
    """Build services on a given database with settings overrides, sharing the test's clock."""
    built = []

    def build(database_url: str, **overrides: str):
        env = make_env(tmp_path, MAILER_DATABASE_URL=database_url, **overrides)
        services = build_services(Settings.from_env(env, dotenv=tmp_path / "absent.env"), clock=clock)
        built.append(services)
        return services

    yield build
    for services in built:
        services.db.dispose()


@pytest.fixture
def services(make_services, database_url):
    return make_services(database_url)


@pytest.fixture
def app(services):
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def broken_sequence(tmp_path, old: str, new: str) -> Path:
    """A copy of the shipped content whose sequence file has `old` replaced by `new`."""
    content = tmp_path / "content"
    shutil.copytree(shipped("content"), content)
    path = content / "sequences" / "mini-guide.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return content


def as_marketing(services, *recipients: str) -> None:
    """Make queued mail marketing mail (the first step of the shipped sequence) to leads who
    confirmed with marketing consent, for delivery tests about marketing: its own From, retry
    policy, pause and send window."""
    from mailer.store.tables import MARKETING_PRIORITY, Lead, LeadStatus, MailKind, Outbox

    step = services.content.sequences["mini-guide"].steps[0].key
    mail, leads = Outbox.__table__.update(), Lead.__table__.update()
    if recipients:
        mail, leads = mail.where(Outbox.recipient.in_(recipients)), leads.where(Lead.email.in_(recipients))
    with services.db.transaction() as session:
        session.execute(mail.values(kind=MailKind.DRIP.value, sequence="mini-guide", step=step,
                                    priority=MARKETING_PRIORITY))
        session.execute(leads.values(status=LeadStatus.CONFIRMED.value, marketing_consent=True))


# --- a visitor ---------------------------------------------------------------------------

TOKEN_FIELD = re.compile(r'name="(csrf_token|started)" type="hidden" value="([^"]+)"')


def form_tokens(html: str) -> dict[str, str]:
    return dict(TOKEN_FIELD.findall(html))


class Visitor:
    """Fills in the signup form through the test client, taking the time a person takes."""

    def __init__(self, client, clock: SettableClock):
        self.client = client
        self.clock = clock

    def sign_up(self, email: str, first_name: str = "Anne", marketing: bool = False,
                slug: str = "mini-guide", **extra):
        page = self.client.get(f"/gids/{slug}")
        data = {**form_tokens(page.get_data(as_text=True)), "first_name": first_name, "email": email}
        if marketing:
            data["marketing"] = "y"
        data.update(extra)
        self.clock.advance(seconds=5)
        return self.client.post(f"/gids/{slug}", data=data)


@pytest.fixture
def visitor(client, clock) -> Visitor:
    return Visitor(client, clock)


# --- a real SMTP server ------------------------------------------------------------------

@dataclass
class SMTPSink:
    """An aiosmtpd server on a free port that keeps what it receives."""

    host: str
    port: int
    messages: list = field(default_factory=list)
    peers: list = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    replies: dict = field(default_factory=dict)  # recipient -> "550 5.1.1 ..." to refuse it

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?timeout=5"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        self.peers.append(session.peer)
        self.arrived.set()
        return "250 Message accepted"

    def wait(self, count: int, timeout: float) -> bool:
        """Block until `count` messages arrived or `timeout` seconds passed."""
        deadline = datetime.now() + timedelta(seconds=timeout)
        while len(self.messages) < count:
            remaining = (deadline - datetime.now()).total_seconds()
            if remaining <= 0:
                return False
            self.arrived.wait(remaining)
            self.arrived.clear()
        return True


@pytest.fixture
def smtp_server():
    port = free_port()
    sink = SMTPSink("127.0.0.1", port)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture
def redis_url() -> str:
    """Database 15 of the local Redis, emptied for the test (rate limits shared by processes)."""
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.ConnectionError as exc:
        unavailable("redis", str(exc))
    return url


@pytest.fixture
def chromium_path() -> str:
    path = os.environ.get("MAILER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        unavailable("browser", f"no Chromium at {path} (apt-get install chromium)")
    return path


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


from smtp_faults import faulty_smtp  # noqa: E402,F401  (a fixture: the misbehaving relay)


# --- an operator in the dashboard ------------------------------------------------------------

OPERATOR_PASSWORD = "lang-genoeg-wachtwoord-42"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


class Dashboard:
    """A browser of the dashboard through the test client, logged in as one operator: `post`
    sends the session's CSRF token along, as the dashboard's forms do."""

    def __init__(self, app, email: str):
        self.client = app.test_client()
        self.email = email
        self.token = ""

    def log_in(self, password: str = OPERATOR_PASSWORD):
        page = self.client.get("/beheer/login")
        self.token = CSRF_FIELD.search(page.get_data(as_text=True)).group(1)
        answer = self.client.post("/beheer/login", data={"csrf_token": self.token, "email": self.email,
                                                         "password": password})
        self.refresh_token()
        return answer

    def refresh_token(self) -> None:
        found = CSRF_FIELD.search(self.client.get("/beheer/account").get_data(as_text=True))
        self.token = found.group(1) if found else self.token

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, **kwargs):
        return self.client.post(path, data={"csrf_token": self.token, **(data or {})}, **kwargs)


@pytest.fixture
def dashboard(app, services):
    """dashboard(role) -> a Dashboard logged in as a new operator with that role (owner, editor, viewer)."""
    from mailer.operator.accounts import add

    def make(role: str = "owner", email: str | None = None, log_in: bool = True) -> Dashboard:
        email = email or f"{role}@trainingsbureau.nl"
        add(services.db, email, OPERATOR_PASSWORD, role, services.clock.now())
        browser = Dashboard(app, email)
        if log_in:
            answer = browser.log_in()
            assert answer.status_code == 302, answer.get_data(as_text=True)
        return browser

    return make
