"""Logging in (address and password, then the code when the second factor is on), logging
out, the operator's own account (password, second factor), and the operators (owners)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from mailer.errors import InvalidRequest, MailerError
from mailer.operator import accounts
from mailer.store.tables import Role
from mailer.web.admin import bp, common
from mailer.web.extensions import limiter

WRONG = "Dit e-mailadres en wachtwoord horen niet bij elkaar, of de code klopt niet."
LOCKED = "Te veel mislukte pogingen. Probeer het over 15 minuten opnieuw."
PENDING_MINUTES = 5  # between the password and the code
LOGIN_LIMIT = "60 per minute"  # per IP, on top of the guard's failure counts: floods of any kind


def _guard() -> accounts.LoginGuard:
    app = common.current_app
    guard = app.extensions.get("mailer_login_guard")
    if guard is None:
        guard = app.extensions["mailer_login_guard"] = accounts.LoginGuard(
            common.services().settings.ratelimit_storage_url)
    return guard


def _safe_next(target: str | None) -> str:
    """Only a path of the dashboard itself (never another host)."""
    if target and target.startswith("/beheer/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("admin.overview")


def _locked(email: str):
    return render_template("beheer/login.html", message=LOCKED, email=email, step="password"), 429


def _audit_lock(email: str | None, attempt: accounts.Attempt) -> None:
    if attempt.locked_now:
        from mailer.operator import audit

        audit.record(common.services().db, audit.Actor(email, request.remote_addr), "login.locked", common.now(),
                     target=f"account {email}", outcome="refused",
                     detail="10 failed logins for the account, or 50 from the address, within 15 minutes")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"], scope="admin-login")
def login():
    if current_user.is_authenticated:
        return redirect(url_for("admin.overview"))
    if request.method == "GET":
        return render_template("beheer/login.html", step="password", email="", next=request.args.get("next"))
    email = request.form.get("email", "").strip()
    password = request.form.get("password", "")
    nxt = request.form.get("next")
    services = common.services()
    attempt = accounts.check_password_login(services.db, _guard(), email, password, request.remote_addr,
                                            common.now())
    _audit_lock(email, attempt)
    if attempt.outcome == "locked" or attempt.locked_now:
        return _locked(email)
    if attempt.outcome == "wrong":
        return render_template("beheer/login.html", step="password", message=WRONG, email=email, next=nxt), 401
    if attempt.outcome == "code":
        session.clear()
        session["pending_operator"] = attempt.operator_id
        session["pending_at"] = common.now().timestamp()
        session["pending_next"] = nxt
        return redirect(url_for("admin.login_code"))
    return _signed_in(attempt.operator_id, nxt)


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"], scope="admin-login")
def login_code():
    operator_id = session.get("pending_operator")
    started = session.get("pending_at", 0)
    if operator_id is None or common.now().timestamp() - started > PENDING_MINUTES * 60:
        session.clear()
        flash("Log opnieuw in: de stap met de code duurde te lang.", "info")
        return redirect(url_for("admin.login"))
    if request.method == "GET":
        return render_template("beheer/login.html", step="code")
    attempt = accounts.check_code_login(common.services().db, _guard(), operator_id, request.form.get("code", ""),
                                        request.remote_addr, common.now())
    if attempt.locked_now or attempt.outcome == "locked":
        _audit_lock(None, attempt)
        session.clear()
        return _locked("")
    if attempt.outcome == "wrong":
        return render_template("beheer/login.html", step="code", message=WRONG), 401
    return _signed_in(operator_id, session.get("pending_next"))


def _signed_in(operator_id: int, nxt: str | None):
    services = common.services()
    # A new session: whatever the browser brought (a planted cookie too) is dropped, and the
    # token that identifies the login is made now, on the server.
    session.clear()
    token = accounts.start_session(services.db, operator_id, request.remote_addr, common.now())
    signed = accounts.load_session(services.db, token, common.now(), common.idle(services.settings),
                                   common.absolute(services.settings))
    login_user(common.User(signed))
    common.act("login")
    return redirect(_safe_next(nxt))


@bp.post("/uitloggen")
def logout():
    common.act("logout")
    accounts.end_session(common.services().db, current_user.signed.token)
    logout_user()
    session.clear()
    flash("Je bent uitgelogd.", "info")
    return redirect(url_for("admin.login"))


# --- the operator's own account --------------------------------------------------------------

@bp.get("/account")
def account():
    return render_template("beheer/account.html", setup=None, codes=session.pop("recovery_codes", None))


@bp.post("/account/wachtwoord")
def password():
    services = common.services()
    try:
        changed = accounts.change_own_password(services.db, current_user.signed.id, request.form.get("current", ""),
                                               request.form.get("new", ""), common.now())
    except accounts.PasswordRefused as refused:
        return render_template("beheer/account.html", setup=None, codes=None, password_error=refused.dutch), 400
    if not changed:
        return render_template("beheer/account.html", setup=None, codes=None,
                               password_error="Je huidige wachtwoord klopt niet. Er is niets veranderd."), 400
    common.act("account.password", f"operator {current_user.signed.email}", "every session of the operator ended")
    # Every session ended, this one too: a new one for this browser, as at a login.
    return _signed_in_again(current_user.signed.id, "Je wachtwoord is gewijzigd. Je andere sessies zijn beëindigd.")


def _signed_in_again(operator_id: int, message: str):
    services = common.services()
    logout_user()
    session.clear()
    token = accounts.start_session(services.db, operator_id, request.remote_addr, common.now())
    login_user(common.User(accounts.load_session(services.db, token, common.now(), common.idle(services.settings),
                                                 common.absolute(services.settings))))
    flash(message, "info")
    return redirect(url_for("admin.account"))


@bp.post("/account/tweede-stap")
def totp_start():
    secret = accounts.new_totp_secret()
    session["totp_secret"] = secret
    return _totp_page(secret)


def _totp_page(secret: str, error: str | None = None, status: int = 200):
    org = common.services().content.organisation.name
    uri = accounts.totp_uri(secret, current_user.signed.email, org)
    grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return render_template("beheer/account.html", setup={"secret": grouped, "uri": uri, "qr": _qr(uri)},
                           codes=None, totp_error=error), status


def _qr(uri: str) -> str:
    import segno

    return segno.make(uri, error="m").svg_data_uri(scale=4, border=2)


@bp.post("/account/tweede-stap/aan")
def totp_enable():
    secret = session.get("totp_secret")
    if not secret:
        return redirect(url_for("admin.account"))
    try:
        codes = accounts.enable_totp(common.services().db, current_user.signed.id, secret, request.form.get("code", ""),
                                     common.now())
    except accounts.CodeRefused:
        return _totp_page(secret, "Deze code klopt niet. Kijk of de tijd op je telefoon goed staat en probeer "
                                  "de nieuwste code.", 400)
    session.pop("totp_secret", None)
    common.act("account.totp_on", f"operator {current_user.signed.email}")
    session["recovery_codes"] = codes
    flash("De tweede stap staat aan. Bewaar de herstelcodes hieronder op een veilige plek.", "info")
    return redirect(url_for("admin.account"))


@bp.post("/account/tweede-stap/uit")
def totp_disable():
    if common.services().settings.admin_require_2fa and current_user.signed.role == Role.OWNER:
        flash("Als eigenaar moet je de tweede stap aan laten staan.", "error")
        return redirect(url_for("admin.account"))
    accounts.disable_totp(common.services().db, current_user.signed.id)
    common.act("account.totp_off", f"operator {current_user.signed.email}")
    flash("De tweede stap staat uit.", "info")
    return redirect(url_for("admin.account"))


# --- operators (owners) ------------------------------------------------------------------------

@bp.get("/beheerders")
@common.requires("operators.manage")
def operators():
    services = common.services()
    found = accounts.operators(services.db, common.now(), common.idle(services.settings),
                               common.absolute(services.settings))
    return render_template("beheer/operators.html", operators=found, roles=common.ROLE_NAMES,
                           form=request.args)


@bp.post("/beheerders")
@common.requires("operators.manage")
def operator_add():
    services = common.services()
    email, role = request.form.get("email", ""), request.form.get("role", "viewer")
    try:
        added = accounts.add(services.db, email, request.form.get("password", ""), Role(role).value, common.now())
    except accounts.PasswordRefused as refused:
        flash(refused.dutch, "error")
        return redirect(url_for("admin.operators"))
    except (InvalidRequest, ValueError):
        flash("Dit adres is geen geldig e-mailadres, of er is al een beheerder met dit adres.", "error")
        return redirect(url_for("admin.operators"))
    common.act("operators.add", f"operator {added.email}", f"role {added.role}")
    flash(f"{added.email} kan nu inloggen als {common.ROLE_NAMES[Role(added.role)]}.", "info")
    return redirect(url_for("admin.operators"))


@bp.post("/beheerders/verwijderen")
@common.requires("operators.manage")
def operator_remove():
    email = request.form.get("email", "")
    try:
        removed = accounts.remove(common.services().db, email)
    except MailerError:
        flash("Deze beheerder bestaat niet, of is de laatste eigenaar.", "error")
        return redirect(url_for("admin.operators"))
    common.act("operators.remove", f"operator {removed.email}", "their sessions ended")
    if removed.id == current_user.signed.id:
        logout_user()
        session.clear()
        return redirect(url_for("admin.login"))
    flash(f"{removed.email} is verwijderd; open sessies zijn beëindigd.", "info")
    return redirect(url_for("admin.operators"))

