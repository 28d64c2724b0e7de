"""The dashboard's operators: accounts, passwords, the second factor, sessions, the login guard,
and which role may do what.

Passwords are Argon2id hashes (argon2-cffi's defaults, rehashed at login when those change),
at least MIN_PASSWORD characters and not one of the 30,000 most common passwords. A session is
a random token in the cookie; the database keeps its sha256, so logging out, a password change
and removing the operator end it on the server. Every function opens its own transaction.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from mailer.errors import InvalidRequest, MailerError
from mailer.funnel.addresses import normalise_email
from mailer.store.database import Database
from mailer.store.tables import Operator, OperatorSession, Role

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 would hash a megabyte; nobody types that
MAX_ADDRESS = 320
RECOVERY_CODES = 10
TOUCH_EVERY = timedelta(minutes=1)  # a session's last_seen_at is written at most this often

# Which role an action needs; anything not named here needs only a session (reading).
NEEDS: dict[str, Role] = {
    "outbox.retry": Role.EDITOR,
    "outbox.cancel": Role.EDITOR,
    "outbox.pause": Role.EDITOR,
    "outbox.resume": Role.OWNER,  # resuming a paused marketing stream
    "lead.unsubscribe": Role.EDITOR,
    "lead.resend": Role.EDITOR,
    "lead.export": Role.OWNER,
    "lead.erase": Role.OWNER,
    "leads.export": Role.OWNER,
    "sequence.test": Role.EDITOR,
    "newsletter.test": Role.EDITOR,
    "newsletter.schedule": Role.EDITOR,
    "newsletter.pause": Role.EDITOR,
    "newsletter.resume": Role.EDITOR,
    "newsletter.cancel": Role.EDITOR,
    "operators.manage": Role.OWNER,
}


def may(role: str, action: str) -> bool:
    """Whether an operator with `role` may do `action` (a key of NEEDS)."""
    return Role(role).rank >= NEEDS[action].rank


class PasswordRefused(InvalidRequest):
    """A new password that is too short, too long or too common; `dutch` says it to a dashboard user."""

    def __init__(self, message: str, dutch: str):
        super().__init__(message, "password")
        self.dutch = dutch


class UnknownOperator(InvalidRequest):
    def __init__(self, email: str):
        super().__init__(f"no operator with the address {email}", "EMAIL")


class CodeRefused(MailerError):
    """A TOTP code that does not fit while setting up the second factor."""


@dataclass(frozen=True)
class OperatorView:
    id: int
    email: str
    role: str
    totp: bool
    recovery_codes_left: int
    created_at: datetime
    last_login_at: datetime | None
    sessions: int = 0


@dataclass(frozen=True)
class SignedIn:
    """The operator behind a valid session, and that session's token (Flask-Login's user id)."""

    id: int
    email: str
    role: str
    totp: bool
    token: str

    def may(self, action: str) -> bool:
        return may(self.role, action)


def _hasher():
    from argon2 import PasswordHasher  # imported where a password is hashed or checked, not by every command

    return PasswordHasher()


def _common() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def check_password(password: str, email: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise PasswordRefused(f"a password needs at least {MIN_PASSWORD} characters",
                              f"Kies een wachtwoord van minstens {MIN_PASSWORD} tekens.")
    if len(password) > MAX_PASSWORD:
        raise PasswordRefused(f"a password has at most {MAX_PASSWORD} characters",
                              f"Kies een wachtwoord van hoogstens {MAX_PASSWORD} tekens.")
    folded = password.casefold()
    local = email.partition("@")[0].casefold()
    if folded in _common() or folded.strip("0123456789!?.") in _common() or folded == email.casefold() \
            or (len(local) >= 4 and local in folded and len(folded) - len(local) < 6):
        raise PasswordRefused("that password is one of the most common ones (or the address itself); choose another",
                              "Dit wachtwoord is te bekend of te makkelijk te raden. Kies een ander.")


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _view(operator: Operator, sessions: int = 0) -> OperatorView:
    return OperatorView(operator.id, operator.email, operator.role, operator.totp_secret is not None,
                        len(operator.recovery_codes.split()), operator.created_at, operator.last_login_at, sessions)


def _find(session, email: str) -> Operator:
    found = session.scalar(select(Operator).where(Operator.email == normalise_operator(email)))
    if found is None:
        raise UnknownOperator(email)
    return found


def normalise_operator(email: str) -> str:
    """An operator's address as stored: checked and lower-cased (a login compares it so)."""
    try:
        return normalise_email(email.strip()).lower()
    except ValueError as exc:
        raise InvalidRequest(f"{email!r} is no valid address: {exc}", "EMAIL") from None


# --- accounts ------------------------------------------------------------------------------

def add(db: Database, email: str, password: str, role: str, now: datetime) -> OperatorView:
    address = normalise_operator(email)
    check_password(password, address)
    operator = Operator(email=address, role=Role(role).value, password_hash=_hasher().hash(password),
                        recovery_codes="", created_at=now, password_changed_at=now)
    with db.transaction() as session:
        if session.scalar(select(Operator.id).where(Operator.email == address)) is not None:
            raise InvalidRequest(f"an operator with the address {address} exists already", "EMAIL")
        session.add(operator)
    return _view(operator)


def set_password(db: Database, email: str, password: str, now: datetime) -> int:
    """A new password; every session of the operator ends. Returns how many ended."""
    with db.transaction() as session:
        operator = _find(session, email)
        check_password(password, operator.email)
        operator.password_hash = _hasher().hash(password)
        operator.password_changed_at = now
        return _end_all(session, operator.id)


def change_own_password(db: Database, guard: "LoginGuard", operator_id: int, current: str, new: str,
                        ip: str | None, now: datetime) -> None:
    """A logged-in operator's password change, the current one asked again (counted by the
    login guard like a login: a stolen session cannot try passwords): every session ends, this
    one too (the dashboard starts a new one). AskedAgain, PasswordRefused."""
    with db.transaction() as session:
        operator = _locked_operator(session, operator_id)
        _ask_again(guard, operator, current, None, ip, now)
        check_password(new, operator.email)
        operator.password_hash = _hasher().hash(new)
        operator.password_changed_at = now
        _end_all(session, operator.id)


def remove(db: Database, email: str) -> OperatorView:
    """Remove an operator and end their sessions. The last owner cannot be removed."""
    with db.transaction() as session:
        operator = _find(session, email)
        # The owners' rows locked: two owners removed at once cannot both see the other still there.
        owners = session.scalars(select(Operator.id).where(Operator.role == Role.OWNER.value)
                                 .with_for_update()).all()
        if operator.role == Role.OWNER and len(owners) == 1:
            raise MailerError(f"{operator.email} is the last owner; add another owner first")
        view = _view(operator)
        _end_all(session, operator.id)
        session.delete(operator)
    return view


def operators(db: Database, now: datetime, idle: timedelta, absolute: timedelta) -> list[OperatorView]:
    """Every operator, with the number of sessions still valid."""
    with db.read_only() as session:
        live = dict(session.execute(
            select(OperatorSession.operator_id, func.count()).where(*_valid(now, idle, absolute))
            .group_by(OperatorSession.operator_id)).all())
        return [_view(o, live.get(o.id, 0)) for o in session.scalars(select(Operator).order_by(Operator.email))]


def has_operators(db: Database) -> bool:
    with db.read_only() as session:
        return session.scalar(select(Operator.id).limit(1)) is not None


def reset_second_factor(db: Database, email: str) -> OperatorView:
    """Switch TOTP off for an operator who lost the device and the recovery codes (from the
    command line, by whoever runs the service); their sessions end."""
    with db.transaction() as session:
        operator = _find(session, email)
        operator.totp_secret = None
        operator.totp_last_step = None
        operator.recovery_codes = ""
        _end_all(session, operator.id)
        return _view(operator)


# --- the second factor ---------------------------------------------------------------------

def totp_uri(secret: str, email: str, issuer: str) -> str:
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def _totp_step(secret: str, code: str, now: datetime, after: int | None = None) -> int | None:
    """The time step (of 30 s, within one step of now) whose code `code` is, or None; a step
    not after `after` (the last one used) does not count, so a code works once."""
    import pyotp

    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if (after is None or step > after) and secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def start_totp(db: Database, guard: "LoginGuard", operator_id: int, password: str, ip: str | None,
               now: datetime) -> str:
    """Begin setting up the second factor, the password asked again: a new secret, kept with
    the operator (not in the browser's cookie) until a code from the app confirms it."""
    import pyotp

    with db.transaction() as session:
        operator = _locked_operator(session, operator_id)
        if operator.totp_secret:
            raise MailerError("the second factor is on already; switch it off first")
        _ask_again(guard, operator, password, None, ip, now)
        operator.totp_pending = pyotp.random_base32()
        return operator.totp_pending


def pending_totp(db: Database, operator_id: int) -> str | None:
    with db.read_only() as session:
        return session.scalar(select(Operator.totp_pending).where(Operator.id == operator_id))


def enable_totp(db: Database, operator_id: int, code: str, now: datetime, keep: str) -> list[str]:
    """Turn the second factor on once a code from the app fits the pending secret; the
    operator's other sessions end (they were opened without it; session token `keep` stays).
    Returns the recovery codes, to be shown once: only their hashes are kept."""
    with db.transaction() as session:
        operator = _locked_operator(session, operator_id)
        step = _totp_step(operator.totp_pending, code, now) if operator.totp_pending else None
        if step is None:
            raise CodeRefused("the code does not fit the secret")
        codes = [base64.b32encode(secrets.token_bytes(5)).decode().lower() for _ in range(RECOVERY_CODES)]
        operator.totp_secret, operator.totp_pending, operator.totp_last_step = operator.totp_pending, None, step
        operator.recovery_codes = " ".join(_hash_token(c) for c in codes)
        _end_all(session, operator.id, keep=keep)
    return [f"{c[:4]}-{c[4:]}" for c in codes]


class SecondFactorRequired(MailerError):
    def __init__(self):
        super().__init__("owners must keep the second factor (MAILER_ADMIN_REQUIRE_2FA)")


def disable_totp(db: Database, guard: "LoginGuard", operator_id: int, password: str, code: str, ip: str | None,
                 now: datetime, *, required_for_owners: bool, keep: str) -> None:
    """Switch the second factor off, the password and a code (or a recovery code) asked again;
    the operator's other sessions end. SecondFactorRequired for an owner when
    MAILER_ADMIN_REQUIRE_2FA is on; AskedAgain."""
    with db.transaction() as session:
        operator = _locked_operator(session, operator_id)
        if required_for_owners and operator.role == Role.OWNER:
            raise SecondFactorRequired()
        _ask_again(guard, operator, password, code, ip, now)
        operator.totp_secret = operator.totp_pending = operator.totp_last_step = None
        operator.recovery_codes = ""
        _end_all(session, operator.id, keep=keep)


class AskedAgain(MailerError):
    """The password (or code) asked again before a change did not fit, or the guard holds the
    account; `locked_now`: this failure locked it (an audit row)."""

    def __init__(self, locked: bool, locked_now: bool = False):
        super().__init__("the account is locked for a while" if locked else "the password or code does not fit")
        self.locked = locked
        self.locked_now = locked_now


def _ask_again(guard: "LoginGuard", operator: Operator, password: str, code: str | None, ip: str | None,
               now: datetime) -> None:
    """Check the password again (and, with `code` given, the second factor), counted by the
    login guard like a login."""
    from argon2.exceptions import InvalidHashError, VerificationError

    if guard.locked(operator.email, ip):
        raise AskedAgain(locked=True)
    try:
        fits = _hasher().verify(operator.password_hash, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        fits = False
    if fits and code is not None:
        fits = _second_factor(operator, code, now)
    if not fits:
        locked_now = guard.failed(operator.email, ip)
        raise AskedAgain(locked=locked_now, locked_now=locked_now)


def _second_factor(operator: Operator, code: str, now: datetime) -> bool:
    """Whether `code` is the app's current code (each once) or an unused recovery code (used
    up by this). The caller holds the operator's row locked."""
    step = _totp_step(operator.totp_secret, code, now, after=operator.totp_last_step) \
        if operator.totp_secret else None
    if step is not None:
        operator.totp_last_step = step
        return True
    typed = _hash_token("".join(code.lower().replace("-", "").split()))
    left = operator.recovery_codes.split()
    if typed in left:
        left.remove(typed)
        operator.recovery_codes = " ".join(left)
        return True
    return False


def _locked_operator(session, operator_id: int) -> Operator:
    """The operator's row, locked until the transaction ends (on PostgreSQL; a SQLite writer
    holds the whole database): two requests with one code cannot both use it."""
    return session.scalars(select(Operator).where(Operator.id == operator_id).with_for_update()).one()


# --- logging in ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """What a login step came to. outcome: "ok" (signed in), "code" (the password fits; the
    second factor is asked), "wrong" (address, password or code do not fit: one answer for
    all), "locked" (too many failures for this account or address; nothing was checked).
    `locked_now`: this failure locked the account or address (an audit row)."""

    outcome: str
    operator_id: int | None = None
    locked_now: bool = False
    # The operator's address when the typed one is an account, for the audit row of a lock
    # (never shown; an address that is no account is not kept: it may be anybody's).
    account: str | None = None


class LoginGuard:
    """Failed logins counted per account and per IP in the shared rate-limit storage
    (MAILER_RATELIMIT_STORAGE_URL: every web worker sees the same counts). ACCOUNT_FAILURES
    failures for one address lock it for LOCK_MINUTES, whether the account exists or not (so
    the answer tells nothing); IP_FAILURES from one address lock that IP as long."""

    ACCOUNT_FAILURES = "10 per 15 minutes"
    IP_FAILURES = "50 per 15 minutes"
    LOCK = "1 per 15 minutes"

    def __init__(self, storage_url: str):
        from limits import parse
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_url))
        self.account_failures, self.ip_failures, self.lock = (
            parse(self.ACCOUNT_FAILURES), parse(self.IP_FAILURES), parse(self.LOCK))

    def _keys(self, email: str, ip: str | None) -> list[tuple]:
        account = hashlib.sha256(email.casefold().encode()).hexdigest()[:32]
        return [(self.account_failures, "login-account", account), (self.ip_failures, "login-ip", ip or "-")]

    def locked(self, email: str, ip: str | None) -> bool:
        return any(not self.limiter.test(self.lock, scope, key) for _limit, scope, key in self._keys(email, ip))

    def failed(self, email: str, ip: str | None) -> bool:
        """Count a failure; True when it locks the account or the IP."""
        locked_now = False
        for limit, scope, key in self._keys(email, ip):
            self.limiter.hit(limit, scope, key)
            if not self.limiter.test(limit, scope, key):  # this was the last failure allowed
                self.limiter.clear(limit, scope, key)
                self.limiter.hit(self.lock, scope, key)
                locked_now = True
        return locked_now

    def succeeded(self, email: str) -> None:
        limit, scope, key = self._keys(email, None)[0]
        self.limiter.clear(limit, scope, key)


def check_password_login(db: Database, guard: LoginGuard, email: str, password: str, ip: str | None,
                         now: datetime) -> Attempt:
    """The first step: address and password."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        typed = normalise_operator(email)  # as `add` stored it (an internationalised domain as IDNA)
    except InvalidRequest:
        typed = email.strip().lower()[:MAX_ADDRESS]  # no account has it; counted and answered alike
    if guard.locked(typed, ip):
        return Attempt("locked")
    hasher = _hasher()
    with db.read_only() as session:
        operator = session.scalar(select(Operator).where(Operator.email == typed))
    account = operator.email if operator else None
    try:
        # An unknown address costs the same hash as a known one, so timing tells nothing either.
        hasher.verify(operator.password_hash if operator else _DUMMY.get(hasher), password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return Attempt("wrong", locked_now=guard.failed(typed, ip), account=account)
    if operator is None:
        return Attempt("wrong", locked_now=guard.failed(typed, ip))
    if hasher.check_needs_rehash(operator.password_hash):
        with db.transaction() as session:
            session.execute(update(Operator).where(Operator.id == operator.id)
                            .values(password_hash=hasher.hash(password)))
    if operator.totp_secret:
        return Attempt("code", operator.id)
    guard.succeeded(typed)
    return Attempt("ok", operator.id)


def check_code_login(db: Database, guard: LoginGuard, operator_id: int, code: str, ip: str | None,
                     now: datetime) -> Attempt:
    """The second step: a TOTP code, or one of the recovery codes (used up by this)."""
    with db.transaction() as session:
        operator = session.scalars(select(Operator).where(Operator.id == operator_id).with_for_update()).first()
        if operator is None or guard.locked(operator.email, ip):
            return Attempt("locked", operator_id, account=operator.email if operator else None)
        if _second_factor(operator, code, now):
            guard.succeeded(operator.email)
            return Attempt("ok", operator.id)
        email = operator.email
    return Attempt("wrong", operator_id, locked_now=guard.failed(email, ip), account=email)


class _Dummy:
    """A hash of nothing anyone types, made once, for unknown addresses."""

    hash: str | None = None

    def get(self, hasher) -> str:
        if self.hash is None:
            self.hash = hasher.hash(secrets.token_urlsafe(16))
        return self.hash


_DUMMY = _Dummy()


# --- sessions ------------------------------------------------------------------------------

def _valid(now: datetime, idle: timedelta, absolute: timedelta) -> list:
    return [OperatorSession.last_seen_at > now - idle, OperatorSession.created_at > now - absolute]


def start_session(db: Database, operator_id: int, ip: str | None, now: datetime) -> str:
    """A new session (always a new token: a token from before the login is never taken over);
    returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    with db.transaction() as session:
        session.add(OperatorSession(token_hash=_hash_token(token), operator_id=operator_id, created_at=now,
                                    last_seen_at=now, ip=ip))
        session.execute(update(Operator).where(Operator.id == operator_id).values(last_login_at=now))
    return token


def load_session(db: Database, token: str, now: datetime, idle: timedelta, absolute: timedelta) -> SignedIn | None:
    """The operator behind a session token, or None when it ended, expired or never was.
    Marks the session as used (at most once a minute)."""
    key = _hash_token(token)
    with db.read_only() as session:
        found = session.execute(
            select(OperatorSession.last_seen_at, Operator)
            .join(Operator, Operator.id == OperatorSession.operator_id)
            .where(OperatorSession.token_hash == key, *_valid(now, idle, absolute))).first()
    if found is None:
        return None
    last_seen, operator = found
    if now - last_seen >= TOUCH_EVERY:
        with db.transaction() as session:
            session.execute(update(OperatorSession).where(OperatorSession.token_hash == key).values(last_seen_at=now))
    return SignedIn(operator.id, operator.email, operator.role, operator.totp_secret is not None, token)


def end_session(db: Database, token: str) -> None:
    with db.transaction() as session:
        session.execute(delete(OperatorSession).where(OperatorSession.token_hash == _hash_token(token)))


def _end_all(session, operator_id: int, keep: str | None = None) -> int:
    """End every session of the operator (but the one with token `keep`)."""
    statement = delete(OperatorSession).where(OperatorSession.operator_id == operator_id)
    if keep is not None:
        statement = statement.where(OperatorSession.token_hash != _hash_token(keep))
    return session.execute(statement).rowcount


def purge_sessions(db: Database, now: datetime, idle: timedelta, absolute: timedelta) -> int:
    """Delete sessions past their idle or absolute expiry (the hourly purge job)."""
    with db.transaction() as session:
        return session.execute(delete(OperatorSession).where(
            (OperatorSession.last_seen_at <= now - idle) | (OperatorSession.created_at <= now - absolute))).rowcount
