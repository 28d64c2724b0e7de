"""The bounce mailbox (MAILER_BOUNCE_MAILBOX) read over IMAP from a real server: a private
Debian dovecot started by the test on a free local port, with its own configuration, mail and
log in the test's directory. Reports are put in by IMAP APPEND, as a delivering server would.

What an operator would notice: every report is taken in and the mailbox is emptied; a run that
dies between handling a message and deleting it counts that report once; a database that
cannot be reached leaves every message where it is; a wrong password is an error naming the
setting, not the password; `mailer tick` reads the mailbox when the setting is there."""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from conftest import START, free_port, make_env, unavailable
from sqlalchemy import select

from mailer.bounces import mailbox
from mailer.bounces.mailbox import read_mailbox
from mailer.cli import main
from mailer.errors import MailerError
from mailer.store.tables import BounceReport, Lead, LeadStatus, Outbox

BOUNCE = "bounce@mail.example.nl"
USER, PASSWORD = "bounces", "Gr@pe/fruit 42"  # URL-encoded in the setting
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
START_SECONDS = 15


# --- the server ------------------------------------------------------------------------------------

@dataclass
class Dovecot:
    port: int
    log: Path

    def url(self, password: str = PASSWORD, folder: str = "INBOX") -> str:
        return f"imap://{USER}:{quote(password, safe='')}@127.0.0.1:{self.port}/{folder}"

    def session(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(USER, PASSWORD)
        conn.select("INBOX")
        return conn

    def append(self, *messages: bytes) -> None:
        conn = self.session()
        try:
            for message in messages:
                status, data = conn.append("INBOX", None, None, message)
                assert status == "OK", data
        finally:
            conn.logout()

    def messages(self) -> list[tuple[bytes, bytes]]:
        """Each message left in the INBOX: its Subject line and its flags."""
        conn = self.session()
        try:
            status, data = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert status == "OK", data
            flags = [item[0].split(b"FLAGS (")[1].split(b")")[0] for item in data if isinstance(item, tuple)]
            subjects = [item[1].strip() for item in data if isinstance(item, tuple)]
            # \Recent only says which session saw the message first; \Seen and \Deleted are what count
            return [(subject, b" ".join(f for f in flag.split() if f != b"\\Recent"))
                    for subject, flag in zip(subjects, flags)]
        finally:
            conn.logout()


def _config(root: Path, port: int) -> str:
    """A configuration of its own (no system file, nothing included): IMAP without TLS on
    127.0.0.1:port, one user with a plaintext password, maildir and log under `root`.

    Dovecot refuses to run its login process or a mail process as root. Run as root (as here)
    the login process gets an unprivileged system user, and the mail process runs as that user
    chrooted into the mail folder (the test directory above it is root's alone); run as anyone
    else, everything runs as that user."""
    mail = root / "mail"
    if os.geteuid() == 0:
        account = next(pwd.getpwnam(name) for name in ("dovenull", "nobody") if _user_exists(name))
        (mail / USER).mkdir(parents=True)
        for path in (mail, mail / USER):
            os.chown(path, account.pw_uid, account.pw_gid)
        home = f"{mail}/./{USER}"  # chroot to the mail folder, home /bounces inside it
    else:
        account = pwd.getpwuid(os.getuid())
        (mail / USER).mkdir(parents=True)
        home = f"{mail}/{USER}"
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    return f"""\
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailer-test-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_failure_delay = 0
default_internal_user = {pwd.getpwuid(os.getuid()).pw_name}
default_internal_group = {grp.getgrgid(os.getgid()).gr_name}
default_login_user = {account.pw_name}
mail_location = maildir:~/Maildir
first_valid_uid = {account.pw_uid}
valid_chroot_dirs = {mail}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
  override_fields = uid={account.pw_uid} gid={account.pw_gid} home={home}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def dovecot(tmp_path):
    if not Path(DOVECOT).exists():
        unavailable("imap", f"no dovecot at {DOVECOT} (apt-get install dovecot-imapd)")
    root = tmp_path / "dovecot"
    for folder in ("run", "state"):
        (root / folder).mkdir(parents=True)
    port = free_port()
    config = root / "dovecot.conf"
    config.write_text(_config(root, port))
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    server = Dovecot(port, root / "dovecot.log")
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode(errors="replace") if process.poll() is not None else ""
                log = server.log.read_text(errors="replace") if server.log.exists() else ""
                unavailable("imap", f"dovecot did not listen on {port} within {START_SECONDS} s:\n{output}\n{log}")
            time.sleep(0.02)  # polling the port, under the deadline above
        yield server
    finally:
        # the whole process group of the dovecot this test started (its own session): the master
        # alone takes a second to wind its children down
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.stdout.close()


# --- reports ---------------------------------------------------------------------------------------

def dsn(to: str, recipient: str, *, status: str = "5.1.1", subject: str = "Undelivered Mail Returned to Sender") -> bytes:
    """An RFC 3464 report as Postfix writes one, delivered to `to` (as tests/integration/test_bounces.py)."""
    return f"""Return-Path: <>
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: {to}
Subject: {subject}
Message-ID: {make_msgid(domain="mx.example.org")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {recipient}
Action: failed
Status: {status}
Diagnostic-Code: smtp; 550 {status} user unknown

--B--
""".replace("\n", "\r\n").encode()


def autoreply(to: str) -> bytes:
    return f"""Delivered-To: {to}
From: bert@provincie.nl
To: {to}
Subject: Afwezig: Je mini guide
Message-ID: {make_msgid(domain="provincie.nl")}
Auto-Submitted: auto-replied

Ik ben tot 5 januari afwezig.
""".replace("\n", "\r\n").encode()


GARBAGE = b"\xff\xfe this is no mail at all \x80\x81\r\n<<< >>>\r\n"


@pytest.fixture
def built(make_services, database_url, dovecot):
    return make_services(database_url, MAILER_BOUNCE_ADDRESS=BOUNCE, MAILER_BOUNCE_MAILBOX=dovecot.url())


@pytest.fixture
def addresses(built) -> dict[str, str]:
    """Two confirmed leads, each sent its guide: the signed bounce address each mail went out from."""
    found = {}
    with built.db.transaction() as session:
        for email in ("anne@gemeente.nl", "bert@provincie.nl"):
            lead = Lead(email=email, first_name="A", status=LeadStatus.CONFIRMED.value, magnet="mini-guide",
                        marketing_consent=True, created_at=START, confirmed_at=START, updated_at=START)
            session.add(lead)
            session.flush()
            row = Outbox(kind="guide", lead_id=lead.id, recipient=email, magnet="mini-guide",
                         message_id=make_msgid(domain="example.nl"), priority=0, status="sent", attempts=1,
                         unknown_outcomes=0, created_at=START, queued_at=START, next_attempt_at=START)
            session.add(row)
            session.flush()
            found[email] = built.bounce_addresses.for_row(row.id)
    return found


def _status(built, email: str) -> str:
    with built.db.read_only() as session:
        return session.scalar(select(Lead.status).where(Lead.email == email))


def _reports(built) -> list[tuple[str, str]]:
    with built.db.read_only() as session:
        return [(r.kind, r.source) for r in session.scalars(select(BounceReport).order_by(BounceReport.id))]


# --- the tests -------------------------------------------------------------------------------------

def test_a_run_takes_in_every_message_and_empties_the_mailbox(built, addresses, dovecot):
    anne = addresses["anne@gemeente.nl"]
    dovecot.append(dsn(anne, "anne@gemeente.nl"), autoreply(addresses["bert@provincie.nl"]), GARBAGE)

    report = read_mailbox(built.intake, dovecot.url())

    assert (report.handled, report.duplicates, report.left, report.stopped) == (3, 0, 0, None)
    assert dict(report.by_kind) == {"hard": 1, "ignored": 2}
    assert report.line() == "3 report(s) taken in (1 hard, 2 ignored)"
    assert _status(built, "anne@gemeente.nl") == LeadStatus.UNDELIVERABLE
    assert _status(built, "bert@provincie.nl") == LeadStatus.CONFIRMED  # an auto-reply is no bounce
    assert _reports(built) == [("hard", "imap"), ("ignored", "imap"), ("ignored", "imap")]  # oldest first
    assert dovecot.messages() == []
    assert read_mailbox(built.intake, dovecot.url()).line() == ""  # an empty mailbox: nothing to say


def test_a_run_takes_at_most_its_limit_and_leaves_the_rest_for_the_next(built, addresses, dovecot):
    dovecot.append(*(dsn(addresses["bert@provincie.nl"], "bert@provincie.nl", status="4.2.2", subject=f"Bounce {n}")
                     for n in range(3)))
    report = read_mailbox(built.intake, dovecot.url(), limit=2)
    assert (report.handled, report.left) == (2, 1) and "1 left in the mailbox" in report.line()
    assert dovecot.messages() == [(b"Subject: Bounce 2", b"")]  # the newest waits, unread
    assert read_mailbox(built.intake, dovecot.url()).handled == 1
    assert dovecot.messages() == []


def test_a_run_that_dies_between_handling_and_deleting_counts_the_report_once(built, addresses, dovecot,
                                                                               monkeypatch):
    dovecot.append(dsn(addresses["anne@gemeente.nl"], "anne@gemeente.nl"), autoreply(addresses["anne@gemeente.nl"]))

    class LosesTheConnectionOnDelete(imaplib.IMAP4):
        def uid(self, command, *args):
            if command.upper() == "STORE":
                raise imaplib.IMAP4.abort("socket error: EOF")
            return super().uid(command, *args)

    monkeypatch.setattr(mailbox, "IMAP4", LosesTheConnectionOnDelete)
    with pytest.raises(MailerError, match="MAILER_BOUNCE_MAILBOX: the mailbox .* broke off"):
        read_mailbox(built.intake, dovecot.url())
    assert _reports(built) == [("hard", "imap")]  # handled and committed ...
    assert len(dovecot.messages()) == 2  # ... but not deleted
    monkeypatch.undo()

    report = read_mailbox(built.intake, dovecot.url())
    assert (report.handled, report.duplicates, dict(report.by_kind)) == (1, 1, {"ignored": 1})
    assert "1 handled before, now deleted" in report.line()
    assert _reports(built) == [("hard", "imap"), ("ignored", "imap")]  # the bounce stored once
    assert _status(built, "anne@gemeente.nl") == LeadStatus.UNDELIVERABLE
    assert dovecot.messages() == []


def test_an_unreachable_database_leaves_every_message_in_the_mailbox(built, addresses, dovecot, make_services,
                                                                    tmp_path):
    dovecot.append(dsn(addresses["anne@gemeente.nl"], "anne@gemeente.nl"), autoreply("x@example.org"), GARBAGE)
    (tmp_path / "not-a-database").mkdir()  # SQLite cannot open a directory
    unreachable = make_services(f"sqlite:///{tmp_path / 'not-a-database'}", MAILER_BOUNCE_ADDRESS=BOUNCE)

    report = read_mailbox(unreachable.intake, dovecot.url())

    assert (report.handled, report.left) == (0, 3)
    assert "the database could not be reached" in report.line() and "3 left in the mailbox" in report.line()
    assert [flags for _, flags in dovecot.messages()] == [b"", b"", b""]  # not read, not deleted
    later = read_mailbox(built.intake, dovecot.url())  # the database is back
    assert (later.handled, dict(later.by_kind)) == (3, {"hard": 1, "ignored": 2})
    assert _status(built, "anne@gemeente.nl") == LeadStatus.UNDELIVERABLE
    assert dovecot.messages() == []


def test_a_wrong_password_or_no_server_is_an_error_naming_the_setting_not_the_password(sqlite_url, make_services,
                                                                                        dovecot):
    built = make_services(sqlite_url)
    closed = f"imap://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/INBOX"
    with pytest.raises(MailerError, match="MAILER_BOUNCE_MAILBOX: cannot connect") as unreachable:
        read_mailbox(built.intake, closed)
    assert PASSWORD not in str(unreachable.value) and quote(PASSWORD, safe="") not in str(unreachable.value)

    with pytest.raises(MailerError, match="MAILER_BOUNCE_MAILBOX: the folder 'Bounces'"):
        read_mailbox(built.intake, dovecot.url(folder="Bounces"))

    # last: after a failed login dovecot delays every login from this address for a while
    with pytest.raises(MailerError) as refused:
        read_mailbox(built.intake, dovecot.url(password="Wr0ng-Pa55word"))
    message = str(refused.value)
    assert "MAILER_BOUNCE_MAILBOX" in message and "login" in message and "AUTHENTICATIONFAILED" in message
    assert "Wr0ng-Pa55word" not in message and "Wr0ng" not in message


def test_mailer_tick_reads_the_mailbox_when_the_setting_is_there(built, addresses, dovecot, database_url, tmp_path):
    dovecot.append(dsn(addresses["anne@gemeente.nl"], "anne@gemeente.nl"))
    runner = CliRunner()

    def tick(**settings: str) -> str:
        env = make_env(tmp_path, MAILER_DATABASE_URL=database_url, MAILER_BOUNCE_ADDRESS=BOUNCE, **settings)
        result = runner.invoke(main, ["tick", "--now", "2026-12-01T10:00:00+01:00"], env=env,
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "read-bounce-mailbox" not in tick()  # without MAILER_BOUNCE_MAILBOX: no such job
    assert len(dovecot.messages()) == 1

    output = tick(MAILER_BOUNCE_MAILBOX=dovecot.url())
    assert "read-bounce-mailbox: 1 report(s) taken in (1 hard)" in output, output
    assert dovecot.messages() == []
    assert _status(built, "anne@gemeente.nl") == LeadStatus.UNDELIVERABLE
    assert "read-bounce-mailbox: nothing to do" in tick(MAILER_BOUNCE_MAILBOX=dovecot.url())

    # a mailbox that refuses the login is reported, and the other jobs still run
    output = tick(MAILER_BOUNCE_MAILBOX=dovecot.url(password="Wr0ng-Pa55word"))
    assert "read-bounce-mailbox: not read: MAILER_BOUNCE_MAILBOX" in output and "Wr0ng" not in output
    assert "dispatch-outbox:" in output
