"""The dashboard's doors: no route answers without a session, sessions end on the server,
the login guard, the second factor, CSRF, the CSP, roles and the audit log."""

from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from mailer.operator import accounts
from mailer.store.tables import AuditEntry, Operator, OperatorSession
from mailer.web import create_app
from conftest import CSRF_FIELD, OPERATOR_PASSWORD, Dashboard

OPEN = {"admin.login", "admin.login_code"}
OWN_ACCOUNT = {"admin.logout", "admin.password", "admin.totp_start", "admin.totp_enable", "admin.totp_disable"}


def _dashboard_rules(app):
    return [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/beheer")]


def _path(rule) -> str:
    """A URL for the rule, with made-up values for its parts (an id, a slug)."""
    values = {}
    for name, converter in rule._converters.items():
        values[name] = 1 if type(converter).__name__ == "IntegerConverter" else "mini-guide"
    return rule.build(values, append_unknown=False)[1]


def _audit(services, action: str | None = None) -> list[AuditEntry]:
    with services.db.read_only() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(session.scalars(query))


def test_no_route_under_beheer_answers_without_a_session(app, client):
    page = client.get("/beheer/login")
    assert page.status_code == 200
    token = CSRF_FIELD.search(page.get_data(as_text=True)).group(1)  # a valid CSRF token, so only the session is missing
    rules = _dashboard_rules(app)
    assert len(rules) >= 15, "the walk must see the dashboard's routes"
    for rule in rules:
        if rule.endpoint in OPEN:
            continue
        path = _path(rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            answer = client.open(path, method=method, data={"csrf_token": token} if method == "POST" else None)
            assert answer.status_code == 302, f"{method} {path} answered {answer.status_code} without a session"
            assert answer.headers["Location"].startswith("/beheer/login"), (method, path)


def test_every_dashboard_page_sends_the_csp_and_refuses_framing(app, dashboard):
    owner = dashboard("owner")
    seen = 0
    for rule in _dashboard_rules(app):
        if "GET" not in rule.methods or rule.endpoint in OPEN or rule.arguments:
            continue
        answer = owner.get(_path(rule))
        seen += 1
        assert answer.status_code in (200, 302), (rule.rule, answer.status_code)
        csp = answer.headers["Content-Security-Policy"]
        if rule.endpoint.endswith("_preview"):
            assert "sandbox" in csp and "frame-ancestors 'self'" in csp
            continue
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        body = answer.get_data(as_text=True)
        assert "<script>" not in body and " style=" not in body and "<style" not in body, rule.rule
    assert seen >= 6
    login = app.test_client().get("/beheer/login")
    assert "script-src 'self'" in login.headers["Content-Security-Policy"]
    missing = app.test_client().get("/beheer/bestaat-niet")
    assert missing.status_code in (302, 404) and "Content-Security-Policy" in missing.headers


def test_a_viewer_is_refused_every_action_and_each_refusal_is_audited(app, dashboard, services):
    viewer = dashboard("viewer")
    posts = [rule for rule in _dashboard_rules(app) if "POST" in rule.methods and rule.endpoint not in OPEN]
    unguarded = {rule.endpoint for rule in posts if not hasattr(app.view_functions[rule.endpoint], "action")}
    # Only what an operator does to their own session and account needs no role.
    assert unguarded == OWN_ACCOUNT, "a POST without @common.requires must be about one's own account"
    actions = [(rule, app.view_functions[rule.endpoint].action) for rule in posts if rule.endpoint not in unguarded]
    assert len(actions) >= 8, "the walk must see the dashboard's actions"
    for rule, action in actions:
        before = len(_audit(services))
        answer = viewer.post(_path(rule), data={"id": "1", "email": "x@example.nl"})
        assert answer.status_code == 403, (rule.rule, answer.status_code)
        assert "Geen toegang" in answer.get_data(as_text=True)
        rows = _audit(services)
        assert len(rows) == before + 1 and rows[-1].action == action and rows[-1].outcome == "refused"
        assert rows[-1].operator_email == "viewer@trainingsbureau.nl" and rows[-1].ip == "127.0.0.1"


def test_an_editor_cannot_manage_operators(dashboard, services):
    editor = dashboard("editor")
    answer = editor.post("/beheer/beheerders", data={"email": "nieuw@trainingsbureau.nl", "role": "owner",
                                                     "password": "een-lang-nieuw-wachtwoord"})
    assert answer.status_code == 403
    with services.db.read_only() as session:
        assert session.scalar(select(Operator).where(Operator.email == "nieuw@trainingsbureau.nl")) is None


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(dashboard, services):
    owner = dashboard("owner")
    answer = owner.client.post("/beheer/beheerders", data={"email": "nieuw@trainingsbureau.nl", "role": "owner",
                                                           "password": "een-lang-nieuw-wachtwoord"})
    assert answer.status_code == 400
    assert "Formulier verlopen" in answer.get_data(as_text=True)
    with services.db.read_only() as session:
        assert session.scalar(select(Operator).where(Operator.email == "nieuw@trainingsbureau.nl")) is None
    added = owner.post("/beheer/beheerders", data={"email": "nieuw@trainingsbureau.nl", "role": "viewer",
                                                   "password": "een-lang-nieuw-wachtwoord"})
    assert added.status_code == 302
    assert _audit(services, "operators.add")[-1].target == "operator nieuw@trainingsbureau.nl"


def test_the_session_cookie_is_secure_httponly_and_samesite_lax(app, services):
    accounts.add(services.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", services.clock.now())
    browser = Dashboard(app, "anne@trainingsbureau.nl")
    page = browser.client.get("/beheer/login")
    token = CSRF_FIELD.search(page.get_data(as_text=True)).group(1)
    answer = browser.client.post("/beheer/login", data={"csrf_token": token, "email": "anne@trainingsbureau.nl",
                                                        "password": OPERATOR_PASSWORD})
    cookie = answer.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def _cookie(browser: Dashboard) -> str:
    return browser.client.get_cookie("session").value


def _with_cookie(app, value: str):
    other = app.test_client()
    other.set_cookie("session", value, domain="localhost")
    return other


def test_logging_out_ends_the_session_on_the_server(app, dashboard):
    owner = dashboard("owner")
    copy = _cookie(owner)
    assert _with_cookie(app, copy).get("/beheer/audit").status_code == 200
    answer = owner.post("/beheer/uitloggen")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/beheer/login")
    stolen = _with_cookie(app, copy).get("/beheer/audit")
    assert stolen.status_code == 302 and stolen.headers["Location"].startswith("/beheer/login")


def test_a_password_change_and_removal_end_every_session(app, dashboard, services):
    owner, editor = dashboard("owner"), dashboard("editor")
    copy = _cookie(editor)
    accounts.set_password(services.db, "editor@trainingsbureau.nl", "een-heel-ander-wachtwoord", services.clock.now())
    assert _with_cookie(app, copy).get("/beheer/audit").status_code == 302
    assert editor.log_in("een-heel-ander-wachtwoord").status_code == 302
    copy = _cookie(editor)
    assert _with_cookie(app, copy).get("/beheer/audit").status_code == 200
    removed = owner.post("/beheer/beheerders/verwijderen", data={"email": "editor@trainingsbureau.nl"})
    assert removed.status_code == 302
    assert _with_cookie(app, copy).get("/beheer/audit").status_code == 302
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(OperatorSession)) == 1  # the owner's


def test_changing_ones_own_password_ends_the_other_sessions_and_keeps_this_one(app, dashboard, services):
    owner = dashboard("owner")
    other = Dashboard(app, owner.email)
    other.log_in()
    answer = owner.post("/beheer/account/wachtwoord", data={"current": OPERATOR_PASSWORD,
                                                            "new": "een-nieuw-lang-wachtwoord"})
    assert answer.status_code == 302
    assert owner.get("/beheer/audit").status_code == 200
    assert other.get("/beheer/audit").status_code == 302
    owner.refresh_token()  # a new session, a new CSRF token
    refused = owner.post("/beheer/account/wachtwoord", data={"current": "fout", "new": "nog-een-ander-wachtwoord"})
    assert refused.status_code == 400 and "klopt niet" in refused.get_data(as_text=True)
    common = owner.post("/beheer/account/wachtwoord", data={"current": "een-nieuw-lang-wachtwoord",
                                                            "new": "password1234"})
    assert common.status_code == 400 and "te bekend" in common.get_data(as_text=True)


def test_the_session_id_is_new_at_login_so_a_planted_session_is_worthless(app, services):
    accounts.add(services.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", services.clock.now())
    victim = Dashboard(app, "anne@trainingsbureau.nl")
    victim.client.get("/beheer/login")
    planted = _cookie(victim)  # what an attacker could have set in the victim's browser before the login
    victim.log_in()
    assert _cookie(victim) != planted
    assert victim.get("/beheer/audit").status_code == 200
    attacker = _with_cookie(app, planted).get("/beheer/audit")
    assert attacker.status_code == 302 and attacker.headers["Location"].startswith("/beheer/login")
    with services.db.read_only() as session:
        stored = session.scalars(select(OperatorSession.token_hash)).all()
    assert len(stored) == 1 and all(token not in planted for token in stored)


def test_an_idle_session_and_an_old_session_are_sent_to_the_login_page(dashboard, clock):
    owner = dashboard("owner")
    clock.advance(minutes=29)
    assert owner.get("/beheer/audit").status_code == 200
    clock.advance(minutes=31)
    answer = owner.get("/beheer/audit")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/beheer/login?next=/beheer/audit")
    assert "Je sessie is verlopen" in owner.get(answer.headers["Location"]).get_data(as_text=True)

    owner.log_in()
    for _ in range(11 * 3):  # busy all day, a request every 20 minutes: the idle limit never bites
        clock.advance(minutes=20)
        assert owner.get("/beheer/audit").status_code == 200
    clock.advance(hours=1, minutes=1)
    assert owner.get("/beheer/audit").status_code == 302  # 12 hours after the login, whatever happens


def _login(browser: Dashboard, email: str, password: str):
    page = browser.client.get("/beheer/login")
    token = CSRF_FIELD.search(page.get_data(as_text=True)).group(1)
    return browser.client.post("/beheer/login", data={"csrf_token": token, "email": email, "password": password})


def test_ten_failures_lock_the_account_for_fifteen_minutes_and_say_so_in_dutch(app, services):
    accounts.add(services.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", services.clock.now())
    browser = Dashboard(app, "anne@trainingsbureau.nl")
    for _ in range(9):
        assert _login(browser, "anne@trainingsbureau.nl", "niet-het-wachtwoord").status_code == 401
    locked = _login(browser, "anne@trainingsbureau.nl", "niet-het-wachtwoord")
    assert locked.status_code == 429
    assert "Te veel mislukte pogingen" in locked.get_data(as_text=True)
    right = _login(browser, "Anne@Trainingsbureau.nl", OPERATOR_PASSWORD)
    assert right.status_code == 429, "the right password does not get in while the account is locked"
    assert browser.get("/beheer/audit").status_code == 302
    [lock] = _audit(services, "login.locked")
    assert lock.target == "operator anne@trainingsbureau.nl" and lock.ip == "127.0.0.1"
    # Another account from the same address is not locked by this one.
    accounts.add(services.db, "bert@trainingsbureau.nl", OPERATOR_PASSWORD, "viewer", services.clock.now())
    assert _login(Dashboard(app, "bert@trainingsbureau.nl"), "bert@trainingsbureau.nl",
                  OPERATOR_PASSWORD).status_code == 302


def test_the_answer_never_says_whether_an_account_exists(app, services):
    accounts.add(services.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", services.clock.now())
    browser = Dashboard(app, "x")
    known = _login(browser, "anne@trainingsbureau.nl", "niet-het-wachtwoord")
    unknown = _login(browser, "niemand@trainingsbureau.nl", "niet-het-wachtwoord")
    assert known.status_code == unknown.status_code == 401

    def message(answer):
        return re.search(r'role="alert">([^<]+)<', answer.get_data(as_text=True)).group(1)

    assert message(known) == message(unknown)
    for _ in range(9):
        last = _login(browser, "niemand@trainingsbureau.nl", "niet-het-wachtwoord")
    assert last.status_code == 429  # an unknown address is locked the same way


def test_the_lock_is_shared_by_every_web_worker_through_redis(make_services, sqlite_url, redis_url):
    first = make_services(sqlite_url, MAILER_RATELIMIT_STORAGE_URL=redis_url)
    second = make_services(sqlite_url, MAILER_RATELIMIT_STORAGE_URL=redis_url)
    accounts.add(first.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", first.clock.now())
    apps = [create_app(services=s) for s in (first, second)]
    for n in range(10):
        _login(Dashboard(apps[n % 2], "x"), "anne@trainingsbureau.nl", "niet-het-wachtwoord")
    assert _login(Dashboard(apps[0], "x"), "anne@trainingsbureau.nl", OPERATOR_PASSWORD).status_code == 429
    assert _login(Dashboard(apps[1], "x"), "anne@trainingsbureau.nl", OPERATOR_PASSWORD).status_code == 429


def _enable_totp(owner: Dashboard, clock) -> tuple[str, list[str]]:
    refused = owner.post("/beheer/account/tweede-stap", data={"password": "niet-het-wachtwoord"})
    assert refused.status_code == 400 and "code klopt niet" in refused.get_data(as_text=True)
    page = owner.post("/beheer/account/tweede-stap", data={"password": OPERATOR_PASSWORD}).get_data(as_text=True)
    secret = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', page).group(1).replace(" ", "")
    assert 'src="data:image/svg+xml' in page  # the QR code, as an image the CSP allows
    assert secret not in owner.client.get_cookie("session").value  # kept on the server, not in the cookie
    wrong = owner.post("/beheer/account/tweede-stap/aan", data={"code": "000000"})
    assert wrong.status_code == 400 and secret in wrong.get_data(as_text=True).replace(" ", "")
    done = owner.post("/beheer/account/tweede-stap/aan", data={"code": pyotp.TOTP(secret).at(clock.now())})
    assert done.status_code == 200
    shown = done.get_data(as_text=True)
    codes = re.findall(r"<li><code>([a-z2-7]{4}-[a-z2-7]{4})</code></li>", shown)
    assert len(codes) == 10
    cookie = owner.client.get_cookie("session").value
    assert not any(code.replace("-", "") in cookie or code in cookie for code in codes), "never in the cookie"
    assert "herstelcodes" not in owner.get("/beheer/account").get_data(as_text=True), "shown once"
    return secret, codes


def test_logging_in_with_the_second_factor_and_with_a_recovery_code(app, dashboard, services, clock):
    owner = dashboard("owner")
    secret, codes = _enable_totp(owner, clock)
    owner.post("/beheer/uitloggen")
    clock.advance(seconds=30)  # the code that switched it on is used up; the app shows the next one

    browser = Dashboard(app, owner.email)
    first = _login(browser, owner.email, OPERATOR_PASSWORD)
    assert first.status_code == 302 and first.headers["Location"] == "/beheer/login/code"
    assert browser.get("/beheer/audit").status_code == 302, "the password alone does not get in"
    page = browser.get("/beheer/login/code").get_data(as_text=True)
    token = CSRF_FIELD.search(page).group(1)
    wrong = browser.client.post("/beheer/login/code", data={"csrf_token": token, "code": "123456"})
    assert wrong.status_code == 401
    right = browser.client.post("/beheer/login/code", data={"csrf_token": token,
                                                            "code": pyotp.TOTP(secret).at(clock.now())})
    assert right.status_code == 302 and browser.get("/beheer/audit").status_code == 200

    replay = Dashboard(app, owner.email)  # someone who saw that code typed, within its 30 seconds
    _login(replay, owner.email, OPERATOR_PASSWORD)
    token = CSRF_FIELD.search(replay.get("/beheer/login/code").get_data(as_text=True)).group(1)
    again = replay.client.post("/beheer/login/code", data={"csrf_token": token,
                                                           "code": pyotp.TOTP(secret).at(clock.now())})
    assert again.status_code == 401, "a code works once"

    for attempt in range(2):
        other = Dashboard(app, owner.email)
        _login(other, owner.email, OPERATOR_PASSWORD)
        token = CSRF_FIELD.search(other.get("/beheer/login/code").get_data(as_text=True)).group(1)
        answer = other.client.post("/beheer/login/code", data={"csrf_token": token, "code": codes[0].upper()})
        assert answer.status_code == (302 if attempt == 0 else 401), "a recovery code works once"


def test_owners_must_set_up_the_second_factor_when_the_setting_says_so(make_services, sqlite_url, clock):
    services = make_services(sqlite_url, MAILER_ADMIN_REQUIRE_2FA="true")
    app = create_app(services=services)
    accounts.add(services.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", clock.now())
    accounts.add(services.db, "bert@trainingsbureau.nl", OPERATOR_PASSWORD, "viewer", clock.now())
    owner = Dashboard(app, "anne@trainingsbureau.nl")
    owner.log_in()
    answer = owner.get("/beheer/audit")
    assert answer.status_code == 302 and answer.headers["Location"] == "/beheer/account"
    _enable_totp(owner, clock)
    assert owner.get("/beheer/audit").status_code == 200
    viewer = Dashboard(app, "bert@trainingsbureau.nl")
    viewer.log_in()
    assert viewer.get("/beheer/audit").status_code == 200  # only owners must


def test_the_audit_log_cannot_be_changed_or_emptied(dashboard, services):
    dashboard("owner")
    for statement in ("UPDATE audit_log SET action = 'nothing'", "DELETE FROM audit_log"):
        with pytest.raises(IntegrityError, match="append-only"):
            with services.db.transaction() as session:
                session.execute(text(statement))
    assert [row.action for row in _audit(services)] == ["login"]


def test_the_audit_page_shows_who_did_what_from_where(dashboard, services):
    owner = dashboard("owner")
    dashboard("viewer").post("/beheer/beheerders", data={"email": "x@example.nl"})
    page = owner.get("/beheer/audit").get_data(as_text=True)
    assert "operators.manage" in page and "geweigerd" in page and "viewer@trainingsbureau.nl" in page
    assert "127.0.0.1" in page
    filtered = owner.get("/beheer/audit?actie=login").get_data(as_text=True)
    assert "operators.manage" not in filtered and "<code>login</code>" in filtered


def test_the_hourly_purge_deletes_expired_sessions(dashboard, services, clock):
    from mailer.scheduler import run_once

    dashboard("owner")
    clock.advance(hours=13)
    done = dict(run_once(services))
    assert "deleted 1 expired dashboard session(s)" in done["purge-pending"]
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(OperatorSession)) == 0


@pytest.mark.parametrize("target", ["//evil.example/beheer/", "/beheer/\r\nX-Injected: 1", "https://evil.example/",
                                    "/beheer/\\\\evil.example", "/elders"])
def test_after_the_login_only_a_dashboard_path_is_followed(app, services, target):
    accounts.add(services.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", services.clock.now())
    browser = Dashboard(app, "x")
    page = browser.client.get("/beheer/login")
    token = CSRF_FIELD.search(page.get_data(as_text=True)).group(1)
    answer = browser.client.post("/beheer/login", data={"csrf_token": token, "email": "anne@trainingsbureau.nl",
                                                        "password": OPERATOR_PASSWORD, "next": target})
    assert answer.status_code == 302 and answer.headers["Location"] == "/beheer/"


def test_fifty_failures_from_one_address_lock_that_address(app, services):
    for n in range(49):
        assert _login(Dashboard(app, "x"), f"iemand{n}@trainingsbureau.nl", "niet-het-wachtwoord").status_code == 401
    assert _login(Dashboard(app, "x"), "nog-iemand@trainingsbureau.nl", "niet-het-wachtwoord").status_code == 429
    [lock] = _audit(services, "login.locked")
    assert lock.target == "an address that is no account" and lock.ip == "127.0.0.1"
    assert not any("iemand" in (row.target + (row.operator_email or "") + row.detail) for row in _audit(services)), \
        "an address that is no account is not kept in the log"


def test_a_long_typed_address_is_answered_and_locked_like_any_other(app, services):
    long = "a" * 400 + "@trainingsbureau.nl"
    for _ in range(9):
        assert _login(Dashboard(app, "x"), long, "niet-het-wachtwoord").status_code == 401
    assert _login(Dashboard(app, "x"), long, "niet-het-wachtwoord").status_code == 429
    assert len(_audit(services, "login.locked")) == 1


def test_failed_codes_lock_the_account_and_the_lock_names_it(app, dashboard, services, clock):
    owner = dashboard("owner")
    _enable_totp(owner, clock)
    browser = Dashboard(app, owner.email)
    _login(browser, owner.email, OPERATOR_PASSWORD)
    token = CSRF_FIELD.search(browser.get("/beheer/login/code").get_data(as_text=True)).group(1)
    answers = [browser.client.post("/beheer/login/code", data={"csrf_token": token, "code": "000000"}).status_code
               for _ in range(9)]
    # the wrong password asked again while setting it up (_enable_totp) was the first failure
    assert answers == [401] * 8 + [429]
    [lock] = _audit(services, "login.locked")
    assert lock.target == f"operator {owner.email}"
    assert _login(Dashboard(app, owner.email), owner.email, OPERATOR_PASSWORD).status_code == 429


def test_a_code_of_the_step_before_or_after_is_taken_two_steps_away_is_not(app, dashboard, clock):
    owner = dashboard("owner")
    secret, _codes = _enable_totp(owner, clock)
    totp = pyotp.TOTP(secret)
    for offset, status in ((-60, 401), (60, 401), (30, 302)):
        clock.advance(seconds=90)  # past the steps used before
        browser = Dashboard(app, owner.email)
        _login(browser, owner.email, OPERATOR_PASSWORD)
        token = CSRF_FIELD.search(browser.get("/beheer/login/code").get_data(as_text=True)).group(1)
        code = totp.at(clock.now().timestamp() + offset)
        answer = browser.client.post("/beheer/login/code", data={"csrf_token": token, "code": code})
        assert answer.status_code == status, offset


def test_switching_the_second_factor_off_asks_password_and_code_and_ends_other_sessions(app, dashboard, clock,
                                                                                       services):
    owner = dashboard("owner")
    secret, codes = _enable_totp(owner, clock)
    other = Dashboard(app, owner.email)
    _login(other, owner.email, OPERATOR_PASSWORD)
    clock.advance(seconds=30)
    token = CSRF_FIELD.search(other.get("/beheer/login/code").get_data(as_text=True)).group(1)
    other.client.post("/beheer/login/code", data={"csrf_token": token, "code": pyotp.TOTP(secret).at(clock.now())})
    assert other.get("/beheer/audit").status_code == 200

    for data in ({"password": OPERATOR_PASSWORD, "code": "000000"}, {"password": "fout", "code": codes[0]}):
        refused = owner.post("/beheer/account/tweede-stap/uit", data=data)
        assert refused.status_code == 400
    with services.db.read_only() as session:
        assert session.scalar(select(Operator.totp_secret)) == secret
    off = owner.post("/beheer/account/tweede-stap/uit", data={"password": OPERATOR_PASSWORD, "code": codes[1]})
    assert off.status_code == 302
    with services.db.read_only() as session:
        assert session.scalar(select(Operator.totp_secret)) is None
    assert owner.get("/beheer/audit").status_code == 200
    assert other.get("/beheer/audit").status_code == 302, "the other session ended"
    assert [row.action for row in _audit(services)][-1] == "account.totp_off"


def test_an_owner_cannot_switch_the_required_second_factor_off(make_services, sqlite_url, clock):
    services = make_services(sqlite_url, MAILER_ADMIN_REQUIRE_2FA="true")
    app = create_app(services=services)
    accounts.add(services.db, "anne@trainingsbureau.nl", OPERATOR_PASSWORD, "owner", clock.now())
    owner = Dashboard(app, "anne@trainingsbureau.nl")
    owner.log_in()
    _secret, codes = _enable_totp(owner, clock)
    answer = owner.post("/beheer/account/tweede-stap/uit", data={"password": OPERATOR_PASSWORD, "code": codes[0]})
    assert answer.status_code == 302
    assert "moet je de tweede stap aan laten staan" in owner.get("/beheer/account").get_data(as_text=True)
    with services.db.read_only() as session:
        assert session.scalar(select(Operator.totp_secret)) is not None


def test_guessing_the_current_password_from_a_stolen_session_is_locked_like_a_login(dashboard, services):
    owner = dashboard("owner")
    for n in range(9):
        answer = owner.post("/beheer/account/wachtwoord", data={"current": f"gok-{n}", "new": "een-nieuw-wachtwoord-1"})
        assert answer.status_code == 400
    assert owner.post("/beheer/account/wachtwoord", data={"current": "gok-9",
                                                          "new": "een-nieuw-wachtwoord-1"}).status_code == 429
    right = owner.post("/beheer/account/wachtwoord", data={"current": OPERATOR_PASSWORD,
                                                           "new": "een-nieuw-wachtwoord-1"})
    assert right.status_code == 429, "locked: not even the right password changes it"
    assert _audit(services, "login.locked")[0].target == f"operator {owner.email}"


def test_the_dashboard_leaves_a_visitors_session_alone(client):
    first = client.get("/gids/mini-guide")
    assert "Set-Cookie" in first.headers  # the form's CSRF token
    again = client.get("/gids/mini-guide")
    assert again.status_code == 200 and "Set-Cookie" not in again.headers
