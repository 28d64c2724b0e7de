"""A real bounce, end to end: a private Postfix instance (Debian's postfix, started and stopped
by the test on a free local port in a temporary folder) accepts a mail for an unknown local
user, its local delivery agent refuses it ("unknown user"), Postfix writes its own delivery
status notification to the envelope sender bounce+TOKEN@mail.example.nl, and a pipe transport
hands that to `mailer bounces ingest --to ${recipient}`, as docs/bounces.md tells an operator.

The instance lives in a folder of its own under the system's temporary folder, not in the
test's tmp_path: Postfix's daemons run as the user postfix and the pipe as nobody, and pytest's
tmp_path sits under a folder only root may enter. That folder also holds the SQLite database
the pipe writes to (owned by nobody: SQLite, run as root, gives its -wal and -shm files the
database file's owner, so the test and the pipe share it).
"""

from __future__ import annotations

import functools
import os
import pty
import pwd
import selectors
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from email.utils import make_msgid
from pathlib import Path

import pytest
from conftest import START, free_port, unavailable
from sqlalchemy import select

from mailer.store.migrate import upgrade
from mailer.store.tables import (
    BounceReport,
    Lead,
    LeadStatus,
    MailKind,
    Outbox,
    OutboxStatus,
)

POSTFIX = "/usr/sbin/postfix"
HOSTNAME = "mail.example.nl"  # the bounce domain: MAILER_BOUNCE_ADDRESS is bounce@ this
BOUNCE = f"bounce@{HOSTNAME}"
UNKNOWN = "nobody-here@example.test"  # a local domain of the instance, with no such user
PIPE_USER = "nobody"  # pipe(8) refuses root and the mail owner
SECRET = "test-secret-key-0123456789"
DEADLINE = 30  # seconds for the mail to go in, bounce and come back

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {work}/config
queue_directory = {work}/queue
data_directory = {work}/data
mail_owner = postfix
maillog_file = {work}/maillog
maillog_file_prefixes = {work}
myhostname = {hostname}
mydomain = example.nl
myorigin = $myhostname
mydestination = {hostname}, example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
# smtpd accepts any local user, so the mailer's relay says 250; local(8) then finds no such
# user and bounces: Postfix's own DSN, not a refusal during the SMTP conversation
local_recipient_maps =
alias_maps =
alias_database =
recipient_delimiter = +
# bounce+TOKEN@{hostname} (the extension stripped for the lookup) goes to the mailer
transport_maps = texthash:{work}/config/transport
mailer_destination_recipient_limit = 1
# nothing leaves this instance
relayhost =
default_transport = error:5.7.1 this test instance relays nothing
relay_transport = error:5.7.1 this test instance relays nothing
smtp_dns_support_level = disabled
notify_classes =
biff = no
# a pipe that said "try again later" (75) is tried again soon
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
mailer    unix  - n n - - pipe
  flags=DRq user={pipe_user} argv={work}/ingest ${{recipient}}
"""

INGEST = """\
#!/bin/sh
# what Postfix's pipe runs: `mailer bounces ingest` with the test's settings
cd {work}
export MAILER_DATABASE_URL='{database_url}'
export MAILER_BOUNCE_ADDRESS='{bounce}'
export MAILER_SECRET_KEY='{secret}'
export MAILER_INSTANCE_PATH='{work}/instance'
export MAILER_MAIL_URL='smtp://127.0.0.1:{port}'
export MAILER_BASE_URL='https://guide.example.nl'
export MAILER_FROM='Trainingsbureau <guide@example.nl>'
exec {mailer} bounces ingest --to "$1" 2>>{work}/ingest.log
"""

# the venv's own interpreter may sit where only root can reach it (a pyenv Python under /root):
# then the same Python version of the system runs the venv's packages, without its own
SYSTEM_PYTHON = ("{python} -S -c 'import site, sys; site.addsitedir(\"{site}\"); "
                 "from mailer.cli import main; sys.argv[0] = \"mailer\"; sys.exit(main())'")


@functools.cache
def _mailer_command(user: str) -> tuple[str | None, str]:
    """A shell command line that runs `mailer` as `user`, or None and why not."""
    mailer = Path(sys.executable).with_name("mailer")
    candidates = [str(mailer)]
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if system:
        candidates.append(SYSTEM_PYTHON.format(python=system, site=sysconfig.get_paths()["purelib"]))
    tried = []
    for command in candidates:
        # as pipe(8) runs it: the user's own group, no others (root's group would not pass
        # through a folder open to "others" only)
        probe = subprocess.run(["/bin/sh", "-c", f"cd / && {command} bounces --help"], user=user,
                               group=pwd.getpwnam(user).pw_gid, extra_groups=[], capture_output=True, text=True,
                               timeout=30, check=False)
        if probe.returncode == 0:
            return command, ""
        tried.append(f"{command}: {(probe.stdout + probe.stderr).strip()[-300:]}")
    return None, f"user {user} (Postfix's pipe) cannot run mailer: " + "; ".join(tried)


class Postfix:
    """One private Postfix instance in `work`, listening on 127.0.0.1:`port`."""

    def __init__(self, work: Path, port: int):
        self.work = work
        self.port = port
        self.config = work / "config"

    def run(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def complaint(self) -> str:
        """What `postfix check` says: Postfix writes its fatal errors to syslog (absent here), or
        to standard error only when that is a terminal, so give it one."""
        main, terminal = pty.openpty()
        try:
            subprocess.run([POSTFIX, "-c", str(self.config), "check"], stdin=subprocess.DEVNULL,
                           stdout=terminal, stderr=terminal, timeout=20, check=False)
            os.close(terminal)
            terminal = -1
            said = b""
            waiting = selectors.DefaultSelector()
            waiting.register(main, selectors.EVENT_READ)
            while waiting.select(0.5):
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the terminal closed
                    break
                if not chunk:
                    break
                said += chunk
            return said.decode(errors="replace").strip()
        finally:
            os.close(main)
            if terminal >= 0:
                os.close(terminal)

    def log(self, lines: int = 40) -> str:
        texts = []
        for name in ("maillog", "ingest.log"):
            path = self.work / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                texts.append(f"--- {name}:\n" + "\n".join(tail))
        return "\n".join(texts) or "(no maillog)"

    def pipe_refused(self) -> bool:
        """Whether the pipe to the mailer failed for good (the report bounced to nobody)."""
        path = self.work / "maillog"
        return path.exists() and any("relay=mailer," in line and "status=bounced" in line
                                     for line in path.read_text(errors="replace").splitlines())

    def master_pid(self) -> int | None:
        try:
            return int((self.work / "queue" / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.master_pid()
        self.run("stop")
        deadline = time.monotonic() + 10
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def _reports(services) -> list[BounceReport]:
    with services.db.read_only() as session:
        return list(session.scalars(select(BounceReport).order_by(BounceReport.id)))


@pytest.fixture
def work():
    """A folder every user may enter (the daemons run as postfix, the pipe as nobody)."""
    if os.geteuid() != 0:
        unavailable("mta", "a private Postfix instance must be started as root")
    if not os.access(POSTFIX, os.X_OK):
        unavailable("mta", f"no {POSTFIX} (apt-get install postfix)")
    try:
        pwd.getpwnam("postfix"), pwd.getpwnam(PIPE_USER)
    except KeyError as exc:
        unavailable("mta", f"no user {exc}")
    path = Path(tempfile.mkdtemp(prefix="mailer-postfix-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_database_url(request, work) -> str:
    """A database the test and the pipe (as nobody) both write to."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    nobody = pwd.getpwnam(PIPE_USER)
    folder = work / "db"
    folder.mkdir()
    (folder / "mailer.db").touch()
    for path in (folder, folder / "mailer.db"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    url = f"sqlite:///{folder / 'mailer.db'}"
    upgrade(url)
    return url


@pytest.fixture
def code_reachable():
    """Let the pipe's user reach this checkout and its venv. The test runs as root, and a
    checkout in a folder only root may enter (a CI clone in `mktemp -d`, mode 0700) is out of
    nobody's reach: the folders above the code and the venv's packages that lack it get the
    right to be passed through (o+x, not to be listed), and their modes back afterwards."""
    import mailer

    changed: list[tuple[Path, int]] = []
    targets = (Path(mailer.__file__).resolve().parent, Path(sysconfig.get_paths()["purelib"]).resolve())
    try:
        for target in targets:
            for folder in (*reversed(target.parents), target):
                mode = folder.stat().st_mode
                if not mode & 0o001:
                    changed.append((folder, mode))
                    folder.chmod(mode | 0o001)
        yield
    finally:
        for folder, mode in reversed(changed):
            folder.chmod(mode & 0o7777)


@pytest.fixture
def postfix(work, shared_database_url, code_reachable):
    """Postfix started on a free port, its bounces piped to `mailer bounces ingest`; stopped after."""
    port = free_port()
    nobody = pwd.getpwnam(PIPE_USER)
    config = work / "config"
    mailer, why = _mailer_command(PIPE_USER)
    if mailer is None:
        unavailable("mta", why)
    for name in ("config", "queue", "data", "instance"):
        (work / name).mkdir()
    shutil.chown(work / "data", "postfix")
    os.chown(work / "instance", nobody.pw_uid, nobody.pw_gid)
    (work / "ingest.log").touch()
    os.chown(work / "ingest.log", nobody.pw_uid, nobody.pw_gid)
    values = {"work": work, "hostname": HOSTNAME, "port": port, "pipe_user": PIPE_USER,
              "database_url": shared_database_url, "bounce": BOUNCE, "secret": SECRET, "mailer": mailer}
    (config / "main.cf").write_text(MAIN_CF.format(**values))
    (config / "master.cf").write_text(MASTER_CF.format(**values))
    (config / "transport").write_text(f"{BOUNCE} mailer:\n")
    ingest = work / "ingest"
    ingest.write_text(INGEST.format(**values))
    ingest.chmod(0o755)

    instance = Postfix(work, port)
    started = instance.run("start")
    if started.returncode != 0:
        instance.stop()
        said = (started.stdout + started.stderr).strip() or instance.complaint()
        unavailable("mta", f"`postfix -c {config} start` failed ({started.returncode}): {said[-1500:]}\n"
                           f"{instance.log()}")
    try:
        _wait_for_port(port, instance)
        yield instance
    finally:
        instance.stop()


def _wait_for_port(port: int, instance: Postfix) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            instance.stop()
            unavailable("mta", f"Postfix started but does not answer on 127.0.0.1:{port}\n{instance.log()}")
        time.sleep(0.1)


def test_postfix_bounces_an_unknown_user_and_its_own_dsn_reaches_mailer_bounces_ingest(
        make_services, shared_database_url, postfix):
    services = make_services(shared_database_url, MAILER_MAIL_URL=f"smtp://127.0.0.1:{postfix.port}?timeout=10",
                             MAILER_BOUNCE_ADDRESS=BOUNCE, MAILER_SECRET_KEY=SECRET)
    with services.db.transaction() as session:
        lead = Lead(email=UNKNOWN, first_name="N", status=LeadStatus.CONFIRMED.value, magnet="mini-guide",
                    marketing_consent=True, created_at=START, confirmed_at=START, updated_at=START)
        session.add(lead)
        session.flush()
        rows = {}
        for kind, priority, due, step in ((MailKind.GUIDE, 0, START, None),
                                          (MailKind.DRIP, 10, START.replace(day=4), "dag-3")):
            row = Outbox(kind=kind.value, lead_id=lead.id, recipient=UNKNOWN, magnet="mini-guide",
                         message_id=make_msgid(domain="example.nl"), priority=priority, status="queued",
                         attempts=0, unknown_outcomes=0, created_at=START, queued_at=START, next_attempt_at=due,
                         sequence="mini-guide" if step else None, step=step)
            session.add(row)
            session.flush()
            rows[kind] = row.id
        lead_id = lead.id

    # the relay (Postfix's smtpd) takes the mail: 250, nothing known yet about the recipient
    assert services.sender().dispatch_all().sent == 1, postfix.log()
    with services.db.read_only() as session:
        assert session.get(Outbox, rows[MailKind.GUIDE]).status == OutboxStatus.SENT
        assert session.get(Lead, lead_id).status == LeadStatus.CONFIRMED

    deadline = time.monotonic() + DEADLINE
    flushed = time.monotonic()
    while not (found := _reports(services)):
        if time.monotonic() > deadline or postfix.pipe_refused():
            pytest.fail(f"no bounce report (within {DEADLINE} s)\n{postfix.log()}")
        if time.monotonic() - flushed > 3:  # hurry a report the pipe asked to be tried again
            postfix.run("flush")
            flushed = time.monotonic()
        time.sleep(0.1)

    [report] = found
    assert (report.source, report.format, report.kind, report.matched_by) == ("ingest", "dsn", "hard", "verp"), (
        report.note, postfix.log())
    assert report.status == "5.1.1" and report.action == "failed" and report.recipient == UNKNOWN
    assert "unknown user" in report.diagnostic.lower()
    assert (report.outbox_id, report.lead_id) == (rows[MailKind.GUIDE], lead_id)
    # Postfix's own DSN, as it came out of the pipe
    assert f"Reporting-MTA: dns; {HOSTNAME}" in report.raw
    assert "X-Postfix-Queue-ID:" in report.raw
    assert f"From: Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>" in report.raw
    assert 'Diagnostic-Code: X-Postfix; unknown user: "nobody-here"' in report.raw
    assert "Return-Path: <MAILER-DAEMON>" in report.raw  # the null sender, as pipe(8)'s R flag writes it
    assert f"Delivered-To: {services.bounce_addresses.for_row(rows[MailKind.GUIDE])}" in report.raw
    with services.db.read_only() as session:
        assert session.get(Lead, lead_id).status == LeadStatus.UNDELIVERABLE
        assert session.get(Outbox, rows[MailKind.DRIP]).status == OutboxStatus.CANCELLED
