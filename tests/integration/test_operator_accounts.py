"""`mailer operator`: the dashboard's accounts from the command line, on a real database."""

from __future__ import annotations

import os
import pty
import select as io
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import OPERATOR_PASSWORD, Dashboard, make_env
from sqlalchemy import select

from mailer.cli import main
from mailer.store.tables import AuditEntry, Operator


@pytest.fixture
def run(tmp_path, database_url):
    env = make_env(tmp_path, MAILER_DATABASE_URL=database_url)
    runner = CliRunner()

    def invoke(*args, stdin: str | None = None):
        return runner.invoke(main, ["operator", *args], env=env, input=stdin, catch_exceptions=False)

    return invoke


def test_a_script_adds_lists_and_removes_operators(run, services):
    added = run("add", "Anne@Trainingsbureau.nl", "--role", "owner", stdin=OPERATOR_PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    assert "anne@trainingsbureau.nl added as owner" in added.output
    assert run("add", "bert@trainingsbureau.nl", stdin=OPERATOR_PASSWORD + "\n").exit_code == 0
    listed = run("list").output
    assert "anne@trainingsbureau.nl" in listed and "owner" in listed and "bert@trainingsbureau.nl" in listed
    assert "viewer" in listed  # the default role
    with services.db.read_only() as session:
        stored = session.scalar(select(Operator.password_hash).where(Operator.email == "anne@trainingsbureau.nl"))
    assert stored.startswith("$argon2id$") and OPERATOR_PASSWORD not in stored

    last_owner = run("remove", "anne@trainingsbureau.nl")
    assert last_owner.exit_code == 1 and "last owner" in last_owner.output
    assert run("remove", "bert@trainingsbureau.nl").exit_code == 0
    assert "bert@" not in run("list").output
    unknown = run("remove", "niemand@trainingsbureau.nl")
    assert unknown.exit_code == 2 and "no operator" in unknown.output


@pytest.mark.parametrize("password, reason", [("kort", "at least 12"), ("password1234", "most common"),
                                              ("qwertyuiop123", "most common"), ("", "no password")])
def test_weak_passwords_are_refused(run, services, password, reason):
    answer = run("add", "anne@trainingsbureau.nl", stdin=password + "\n")
    assert answer.exit_code != 0 and reason in answer.output
    with services.db.read_only() as session:
        assert session.scalar(select(Operator)) is None


def test_a_new_password_ends_the_operators_sessions(run, app, services):
    run("add", "anne@trainingsbureau.nl", "--role", "owner", stdin=OPERATOR_PASSWORD + "\n")
    browser = Dashboard(app, "anne@trainingsbureau.nl")
    browser.log_in()
    assert browser.get("/beheer/audit").status_code == 200
    changed = run("passwd", "anne@trainingsbureau.nl", stdin="een-heel-nieuw-wachtwoord\n")
    assert changed.exit_code == 0 and "1 session(s) ended" in changed.output
    assert browser.get("/beheer/audit").status_code == 302
    assert browser.log_in().status_code == 401
    assert browser.log_in("een-heel-nieuw-wachtwoord").status_code == 302


def test_on_a_terminal_the_password_is_asked_twice(tmp_path, sqlite_url, make_services):
    """A real pseudo-terminal: the command asks, hides what is typed, and asks again."""
    env = {**os.environ, **make_env(tmp_path, MAILER_DATABASE_URL=sqlite_url)}
    mailer = str(Path(sys.executable).with_name("mailer"))
    pid, fd = pty.fork()
    if pid == 0:  # the child, with the terminal as its stdin, stdout and controlling terminal
        os.execve(mailer, [mailer, "operator", "add", "anne@trainingsbureau.nl", "--role", "editor"], env)
    seen = b""

    def until(text: bytes) -> None:
        nonlocal seen
        while text not in seen:
            ready, _, _ = io.select([fd], [], [], 30)
            assert ready, f"the command did not ask: {seen!r}"
            seen += os.read(fd, 1024)

    until(b"Password:")
    os.write(fd, OPERATOR_PASSWORD.encode() + b"\n")
    until(b"Repeat for confirmation:")
    os.write(fd, OPERATOR_PASSWORD.encode() + b"\n")
    until(b"added as editor")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert OPERATOR_PASSWORD.encode() not in seen, "what is typed is not shown"
    with make_services(sqlite_url).db.read_only() as session:
        assert session.scalar(select(Operator.role)) == "editor"


def test_the_second_factor_can_be_reset_from_the_command_line(run, app, services, clock):
    from mailer.operator import accounts

    run("add", "anne@trainingsbureau.nl", "--role", "owner", stdin=OPERATOR_PASSWORD + "\n")
    with services.db.read_only() as session:
        anne = session.scalar(select(Operator))
    import pyotp

    guard = accounts.LoginGuard("memory://")
    secret = accounts.start_totp(services.db, guard, anne.id, OPERATOR_PASSWORD, None, clock.now())
    accounts.enable_totp(services.db, anne.id, pyotp.TOTP(secret).at(clock.now()), clock.now(), keep="")
    browser = Dashboard(app, "anne@trainingsbureau.nl")
    assert browser.log_in().headers["Location"] == "/beheer/login/code"
    assert run("reset-2fa", "anne@trainingsbureau.nl").exit_code == 0
    assert Dashboard(app, "anne@trainingsbureau.nl").log_in().headers["Location"] == "/beheer/"
    with services.db.read_only() as session:
        logged = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(row.action, row.target) for row in logged if row.action.startswith("operators.")] == [
        ("operators.add", "operator anne@trainingsbureau.nl"), ("operators.reset_2fa", "operator anne@trainingsbureau.nl")]
    assert logged[0].operator_email.startswith("command line (")
