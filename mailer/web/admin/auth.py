"""Logging in (address and password, then the code when the second factor is on), logging
out, the operator's own account (password, second factor), and the operators (owners)."""

from __future__ import annotations

from urllib.parse import urlsplit

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
    """Only a path of the dashboard itself: no other host, no scheme, nothing a header cannot carry."""
    if target and target.startswith("/beheer/") and target.isprintable() and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("admin.overview")


def _locked(email: str):
    return render_template("beheer/login.html", message=LOCKED, email=email, step="password"), 429


LOCK_DETAIL = "10 failed attempts for the account, or 50 from the IP address, within 15 minutes"


def _audit_lock(attempt) -> None:
    """A lock is an audit row; it names the account when the typed address is one (an address
    that is no account may be anybody's, a lead's too, and the log keeps rows for ever)."""
    if attempt.locked_now:
        from mailer.operator import audit

        audit.record(common.services().db, audit.Actor(None, request.remote_addr), "login.locked", common.now(),
                     target=f"operator {attempt.account}" if attempt.account else "an address that is no account",
                     outcome="refused", detail=LOCK_DETAIL)


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
    _audit_lock(attempt)
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
        _audit_lock(attempt)
        session.clear()
        return _locked("")
    if attempt.outcome == "wrong":
        return render_template("beheer/login.html", step="code", message=WRONG), 401
    return _signed_in(operator_id, session.get("pending_next"))


def _signed_in(operator_id: int, nxt: str | None):
    _new_session(operator_id)
    common.act("login")
    return redirect(_safe_next(nxt))


def _new_session(operator_id: int) -> None:
    """A new session: whatever the browser brought (a planted cookie too) is dropped, and the
    token that identifies the login is made now, on the server."""
    services = common.services()
    logout_user()
    session.clear()
    token = accounts.start_session(services.db, operator_id, request.remote_addr, common.now())
    login_user(common.User(accounts.load_session(services.db, token, common.now(), common.idle(services.settings),
                                                 common.absolute(services.settings))))


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
    return _account_page()


def _account_page(status: int = 200, **shown):
    """Mijn account; `shown`: a setup in progress, the recovery codes (once), a message per form."""
    return render_template("beheer/account.html", **{"setup": None, "codes": None, **shown}), status


def _asked_again(refused: accounts.AskedAgain, form: str):
    """The password (or code) asked again did not fit: say so at the form; a lock as at the login."""
    _audit_lock(accounts.Attempt("wrong", locked_now=refused.locked_now, account=current_user.signed.email))
    if refused.locked:
        return _account_page(429, **{form: LOCKED})
    return _account_page(400, **{form: "Je wachtwoord of code klopt niet. Er is niets veranderd."})


@bp.post("/account/wachtwoord")
def password():
    try:
        accounts.change_own_password(common.services().db, _guard(), current_user.signed.id, request.form.get("current", ""),
                                     request.form.get("new", ""), request.remote_addr, common.now())
    except accounts.AskedAgain as refused:
        return _asked_again(refused, "password_error")
    except accounts.PasswordRefused as refused:
        return _account_page(400, password_error=refused.dutch)
    common.act("account.password", f"operator {current_user.signed.email}", "every session of the operator ended")
    _new_session(current_user.signed.id)  # every session ended, this one too: a new one for this browser
    flash("Je wachtwoord is gewijzigd. Je andere sessies zijn beëindigd.", "info")
    return redirect(url_for("admin.account"))


@bp.post("/account/tweede-stap")
def totp_start():
    try:
        secret = accounts.start_totp(common.services().db, _guard(), current_user.signed.id,
                                     request.form.get("password", ""), request.remote_addr, common.now())
    except accounts.AskedAgain as refused:
        return _asked_again(refused, "totp_error")
    except MailerError:  # on already
        return redirect(url_for("admin.account"))
    return _totp_page(secret)


def _totp_page(secret: str, error: str | None = None, status: int = 200):
    org = common.services().content.organisation.name
    uri = accounts.totp_uri(secret, current_user.signed.email, org)
    grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return _account_page(status, setup={"secret": grouped, "qr": _qr(uri)}, totp_error=error)


def _qr(uri: str) -> str:
    import segno

    return segno.make(uri, error="m").svg_data_uri(scale=4, border=2)


@bp.post("/account/tweede-stap/aan")
def totp_enable():
    services = common.services()
    try:
        codes = accounts.enable_totp(services.db, current_user.signed.id, request.form.get("code", ""), common.now(),
                                     keep=current_user.signed.token)
    except accounts.CodeRefused:
        secret = accounts.pending_totp(services.db, current_user.signed.id)
        if secret is None:
            return redirect(url_for("admin.account"))
        return _totp_page(secret, "Deze code klopt niet. Kijk of de tijd op je telefoon goed staat en probeer "
                                  "de nieuwste code.", 400)
    common.act("account.totp_on", f"operator {current_user.signed.email}", "the operator's other sessions ended")
    current_user.signed = accounts.load_session(services.db, current_user.signed.token, common.now(),
                                                common.idle(services.settings), common.absolute(services.settings))
    # The codes go to this answer only (never into the cookie, never stored but as hashes).
    return _account_page(message="De tweede stap staat aan. Bewaar de herstelcodes hieronder op een veilige plek.",
                         codes=codes)


@bp.post("/account/tweede-stap/uit")
def totp_disable():
    services = common.services()
    try:
        accounts.disable_totp(services.db, _guard(), current_user.signed.id, request.form.get("password", ""),
                              request.form.get("code", ""), request.remote_addr, common.now(),
                              required_for_owners=services.settings.admin_require_2fa, keep=current_user.signed.token)
    except accounts.SecondFactorRequired:
        flash("Als eigenaar moet je de tweede stap aan laten staan.", "error")
        return redirect(url_for("admin.account"))
    except accounts.AskedAgain as refused:
        return _asked_again(refused, "totp_error")
    common.act("account.totp_off", f"operator {current_user.signed.email}", "the operator's other sessions ended")
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

