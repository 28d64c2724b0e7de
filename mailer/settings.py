"""Typed settings, read once from ``MAILER_*`` environment variables and an optional ``.env``.

Every check happens here, at start-up, and every error names the variable to fix.
The embedded default needs no settings at all: a SQLite file and a folder of ``.eml``
files under ``instance/``, and a secret key generated once and kept there (mode 0600).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
import secrets
from dataclasses import MISSING, dataclass, fields
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dotenv import dotenv_values
from email_validator import EmailNotValidError, validate_email
from limits import parse_many

from mailer.errors import SettingsError
from mailer.timing import (
    MARKETING,
    TRANSACTIONAL,
    RetryPolicy,
    SendWindow,
    WindowError,
    check_country,
    parse_policy,
    parse_quiet_dates,
)

DRIP_WINDOW, DRIP_TIMEZONE = "mon-fri 09:00-17:00", "Europe/Amsterdam"
# The window skips the public holidays of this country (a code of the holidays package; empty:
# none). The default is known to the package (tests/unit/test_holidays.py), so only another
# code is checked at start-up, which spares every command the package's import.
DRIP_HOLIDAYS = "NL"
MAIL_SCHEMES = ("smtp", "smtp+starttls", "smtps", "file", "console", "memory")


@dataclass(frozen=True)
class MailURL:
    """The parsed ``MAILER_MAIL_URL``: which transport, and where it delivers."""

    scheme: str
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = None
    path: Path | None = None
    timeout: float = 30.0
    cafile: Path | None = None  # trust this CA (a private relay's); default: the system's

    @property
    def is_smtp(self) -> bool:
        return self.scheme.startswith("smtp")


@dataclass(frozen=True)
class Settings:
    database_url: str
    secret_keys: tuple[str, ...]
    base_url: str
    mail: MailURL
    instance_path: Path
    # The operator's copies (`mailer init`); None: the shipped files only. They override the
    # shipped files (mailer/resources.py says how).
    content_path: Path | None
    templates_path: Path | None
    # Each default below is the one the service runs with when the variable is unset (MAILER_
    # and the field's name in capitals; mail_from is MAILER_FROM); _build reads them from here.
    # Two depend on other settings and are worked out in _build: log_mail (on for the file and
    # console transports) and the retry policies (timing.TRANSACTIONAL and MARKETING).
    mail_from: str = "Mini guide <guide@example.nl>"
    ratelimit_storage_url: str = "memory://"
    signup_rate_limit: str = "10 per minute;50 per hour"
    form_min_seconds: float = 2.0
    confirm_max_age_days: int = 7
    confirm_mails_per_day: int = 3
    dispatch_interval: float = 1.0
    send_batch_size: int = 100
    proxy_count: int = 0
    log_mail: bool = False
    retry_transactional: RetryPolicy = parse_policy("MAILER_RETRY_TRANSACTIONAL", TRANSACTIONAL)
    retry_marketing: RetryPolicy = parse_policy("MAILER_RETRY_MARKETING", MARKETING)
    lease_seconds: int = 300
    sqlite_busy_timeout_ms: int = 5000
    marketing_from: str | None = None  # From of marketing mail; default: mail_from
    reply_to: str | None = None  # Reply-To of every mail (a person reads it); default: none
    # The envelope sender's base, bounce@mail.example.nl: each mail is sent from
    # bounce+TOKEN@mail.example.nl, TOKEN naming its outbox row and signed (delivery/verp.py).
    bounce_address: str | None = None
    soft_bounce_limit: int = 3  # this many soft bounces within soft_bounce_days: undeliverable
    soft_bounce_days: int = 30
    # imaps://user:password@host[:port]/FOLDER (imap:// only for a server on this machine): a
    # mailbox the bounce job reads and empties every bounce_mailbox_interval seconds.
    bounce_mailbox: str | None = None
    bounce_mailbox_interval: float = 60.0
    # Provider webhooks (POST /hooks/<provider>): Mailgun's HTTP webhook signing key, and the
    # Amazon SNS topic ARNs whose (signed) notifications are accepted at /hooks/ses.
    mailgun_signing_key: str | None = None
    ses_topic_arns: tuple[str, ...] = ()
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: Path | None = None
    send_rate: str | None = None  # e.g. "20 per second;5000 per hour", for all workers together
    send_concurrency: int = 1
    drip_window: SendWindow = SendWindow.parse(DRIP_WINDOW, DRIP_TIMEZONE, holidays=DRIP_HOLIDAYS)
    drip_interval: float = 60.0
    drip_batch_size: int = 500
    drip_min_gap_hours: float = 24.0  # at most one drip mail per lead in this many hours
    click_tracking: bool = True
    pending_max_age_days: int = 30  # signups not confirmed by then are purged
    # The dashboard (/beheer/): a session ends after this many idle minutes, and after this
    # many hours whatever happens; owners must use a second factor (TOTP) when this is on.
    admin_idle_minutes: int = 30
    admin_session_hours: int = 12
    admin_require_2fa: bool = False

    @property
    def embedded(self) -> bool:
        """True when running on a SQLite file: one machine, one process that does everything."""
        return _is_embedded(self.database_url)

    @property
    def mail_domain(self) -> str:
        """The domain of MAILER_FROM: it names Message-IDs and List-Ids, and DKIM signs for it by default."""
        return parseaddr(self.mail_from)[1].rpartition("@")[2]

    @property
    def is_https(self) -> bool:
        return self.base_url.startswith("https://")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, dotenv: Path | None = None,
                 defaults: dict[str, str] | None = None) -> "Settings":
        """Build and check the settings; raise SettingsError naming the first bad variable.

        Precedence: the environment, then `.env`, then `defaults` (what a command knows,
        such as the address `mailer serve` listens on).
        """
        env = dict(defaults or {})
        env.update(dotenv_values(dotenv or Path.cwd() / ".env"))
        env.update(os.environ if environ is None else environ)
        env = {k: v for k, v in env.items() if k.startswith("MAILER_") and v is not None}
        return _build(env)


def _build(env: dict[str, str]) -> Settings:
    instance = Path(env.get("MAILER_INSTANCE_PATH") or Path.cwd() / "instance").resolve()

    database_url = _database_url(env.get("MAILER_DATABASE_URL"), instance)
    mail = _mail_url(env.get("MAILER_MAIL_URL"), instance)
    embedded = _is_embedded(database_url)
    read = _Reader(env)
    return Settings(
        database_url=database_url,
        secret_keys=_secret_keys(env.get("MAILER_SECRET_KEY"), instance, embedded),
        base_url=_base_url(env.get("MAILER_BASE_URL"), embedded),
        mail=mail,
        instance_path=instance,
        content_path=_folder("MAILER_CONTENT_PATH", env),
        templates_path=_folder("MAILER_TEMPLATES_PATH", env),
        mail_from=_address("MAILER_FROM", read.text("mail_from")),
        ratelimit_storage_url=_storage_url(read.text("ratelimit_storage_url")),
        signup_rate_limit=_rate_limit("MAILER_SIGNUP_RATE_LIMIT", read.text("signup_rate_limit")),
        form_min_seconds=read.number("form_min_seconds", minimum=0),
        confirm_max_age_days=read.number("confirm_max_age_days", minimum=1),
        confirm_mails_per_day=read.number("confirm_mails_per_day", minimum=1),
        dispatch_interval=read.number("dispatch_interval", minimum=0.1),
        send_batch_size=read.number("send_batch_size", minimum=1),
        proxy_count=read.number("proxy_count", minimum=0),
        # Logged by default where the mail goes nowhere a person reads it (a folder, the console).
        log_mail=_flag("MAILER_LOG_MAIL", env, default=mail.scheme in ("file", "console")),
        retry_transactional=parse_policy(
            "MAILER_RETRY_TRANSACTIONAL", env.get("MAILER_RETRY_TRANSACTIONAL") or TRANSACTIONAL),
        retry_marketing=parse_policy("MAILER_RETRY_MARKETING", env.get("MAILER_RETRY_MARKETING") or MARKETING),
        lease_seconds=read.number("lease_seconds", minimum=10),
        sqlite_busy_timeout_ms=read.number("sqlite_busy_timeout_ms", minimum=0),
        send_rate=_rate_limit("MAILER_SEND_RATE", env["MAILER_SEND_RATE"]) if env.get("MAILER_SEND_RATE") else None,
        send_concurrency=read.number("send_concurrency", minimum=1),
        marketing_from=_address("MAILER_MARKETING_FROM", env["MAILER_MARKETING_FROM"])
        if env.get("MAILER_MARKETING_FROM") else None,
        reply_to=_address("MAILER_REPLY_TO", env["MAILER_REPLY_TO"]) if env.get("MAILER_REPLY_TO") else None,
        bounce_address=_bounce_address(env["MAILER_BOUNCE_ADDRESS"]) if env.get("MAILER_BOUNCE_ADDRESS") else None,
        soft_bounce_limit=read.number("soft_bounce_limit", minimum=1),
        soft_bounce_days=read.number("soft_bounce_days", minimum=1),
        bounce_mailbox=_mailbox_url(env["MAILER_BOUNCE_MAILBOX"]) if env.get("MAILER_BOUNCE_MAILBOX") else None,
        bounce_mailbox_interval=read.number("bounce_mailbox_interval", minimum=1),
        mailgun_signing_key=env.get("MAILER_MAILGUN_SIGNING_KEY") or None,
        ses_topic_arns=tuple(arn.strip() for arn in env.get("MAILER_SES_TOPIC_ARNS", "").split(",") if arn.strip()),
        drip_window=_window(env),
        drip_interval=read.number("drip_interval", minimum=1),
        drip_batch_size=read.number("drip_batch_size", minimum=1),
        drip_min_gap_hours=read.number("drip_min_gap_hours", minimum=0),
        click_tracking=_flag("MAILER_CLICK_TRACKING", env, default=_DEFAULTS["click_tracking"]),
        pending_max_age_days=read.number("pending_max_age_days", minimum=1),
        admin_idle_minutes=read.number("admin_idle_minutes", minimum=1),
        admin_session_hours=read.number("admin_session_hours", minimum=1),
        admin_require_2fa=_flag("MAILER_ADMIN_REQUIRE_2FA", env, default=_DEFAULTS["admin_require_2fa"]),
        **_dkim(env),
    )


# The defaults of the Settings fields: the one place each default is written.
_DEFAULTS = {field.name: field.default for field in fields(Settings) if field.default is not MISSING}
_VARIABLES = {"mail_from": "MAILER_FROM"}


class _Reader:
    """Reads a field's variable (MAILER_ + its name in capitals), or gives the field's default."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def text(self, field: str) -> str:
        """The variable as set (an empty value too: its check says what is wrong), or the default."""
        raw = self.env.get(_variable(field))
        return _DEFAULTS[field] if raw is None else raw

    def number(self, field: str, minimum: float):
        default = _DEFAULTS[field]
        return _number(_variable(field), self.env, default, type(default), minimum)


def _variable(field: str) -> str:
    return _VARIABLES.get(field, f"MAILER_{field.upper()}")


def _folder(name: str, env: dict[str, str]) -> Path | None:
    if not env.get(name):
        return None
    folder = Path(env[name]).resolve()
    if not folder.is_dir():
        raise SettingsError(f"{name}: {folder} is not a folder")
    return folder


def _is_embedded(database_url: str) -> bool:
    return database_url.startswith("sqlite")


def _database_url(value: str | None, instance: Path) -> str:
    if not value:
        return f"sqlite:///{instance / 'mailer.db'}"
    if value.startswith("postgres://") or value.startswith("postgresql://"):
        # psycopg 3 is the driver we ship (extra "postgres"); name it so SQLAlchemy does not guess psycopg2.
        value = "postgresql+psycopg://" + value.split("://", 1)[1]
    if not (value.startswith("sqlite:///") or value.startswith("postgresql+psycopg://")):
        raise SettingsError(
            "MAILER_DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST/DB, got "
            f"{value.split('://', 1)[0]}://…"
        )
    return value


def _secret_keys(value: str | None, instance: Path, embedded: bool) -> tuple[str, ...]:
    if value:
        keys = tuple(k.strip() for k in value.split(",") if k.strip())
        short = [i for i, k in enumerate(keys) if len(k) < 16]
        if not keys or short:
            raise SettingsError("MAILER_SECRET_KEY: every key (comma-separated, newest first) needs 16+ characters")
        return keys
    if not embedded:
        raise SettingsError(
            "MAILER_SECRET_KEY is required outside the embedded default (SQLite): set one or more "
            "comma-separated keys, newest first, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return (_instance_secret(instance),)


def _instance_secret(instance: Path) -> str:
    """The embedded default's key: generated once, kept in instance/secret_key with mode 0600."""
    path = instance / "secret_key"
    try:
        if not path.exists():
            _write_new_secret(instance, path)
        key = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(f"MAILER_INSTANCE_PATH: cannot keep the secret key in {path}: {exc}") from None
    if len(key) < 16:
        raise SettingsError(f"MAILER_INSTANCE_PATH: {path} holds no usable key (under 16 characters); "
                            "delete it to have a new one generated, or set MAILER_SECRET_KEY")
    return key


def _write_new_secret(instance: Path, path: Path) -> None:
    """Write the key whole under a temporary name, then link it into place: a crash leaves no
    half-written key, and of two processes starting at once the first link wins."""
    instance.mkdir(parents=True, exist_ok=True)
    partial = instance / f".secret_key.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(partial, path)
    except FileExistsError:
        pass  # another process was first; its key is the one
    finally:
        partial.unlink()


def _base_url(value: str | None, embedded: bool) -> str:
    if not value:
        if not embedded:
            raise SettingsError(
                "MAILER_BASE_URL is required outside the embedded default: the public address "
                "(e.g. https://guide.example.nl) that links in mails point to"
            )
        value = "http://127.0.0.1:8000"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"MAILER_BASE_URL must be an absolute http(s) URL, got {value!r}")
    return value.rstrip("/")


def _mail_url(value: str | None, instance: Path) -> MailURL:
    if not value:
        return MailURL("file", path=instance / "mail")
    parts = urlsplit(value)
    scheme = parts.scheme
    if scheme not in MAIL_SCHEMES:
        raise SettingsError(f"MAILER_MAIL_URL scheme must be one of {', '.join(MAIL_SCHEMES)}, got {scheme!r}")
    if scheme == "file":
        raw = unquote(parts.path)
        if not raw:
            raise SettingsError("MAILER_MAIL_URL: file:///DIR needs a folder")
        path = Path(raw)
        return MailURL("file", path=path if path.is_absolute() else (Path.cwd() / path))
    if scheme in ("console", "memory"):
        return MailURL(scheme)
    try:
        port = parts.port
    except ValueError:
        raise SettingsError(f"MAILER_MAIL_URL has an invalid port: {value!r}") from None
    if not parts.hostname:
        raise SettingsError("MAILER_MAIL_URL needs a host, e.g. smtp+starttls://user:pass@smtp.example.nl:587")
    query = parse_qs(parts.query)
    try:
        timeout = float(query.get("timeout", ["30"])[0])
    except ValueError:
        raise SettingsError("MAILER_MAIL_URL: timeout= must be a number of seconds") from None
    if scheme == "smtp" and parts.username:
        raise SettingsError("MAILER_MAIL_URL: smtp:// would send the password unencrypted; "
                            "use smtp+starttls:// or smtps://")
    cafile = Path(query["cafile"][0]) if "cafile" in query else None
    if cafile is not None and not cafile.is_file():
        raise SettingsError(f"MAILER_MAIL_URL: cafile={cafile} is not a file")
    default_port = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[scheme]
    return MailURL(
        scheme,
        host=parts.hostname,
        port=port or default_port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=timeout,
        cafile=cafile,
    )


def _address(name: str, value: str) -> str:
    display, address = parseaddr(value)
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SettingsError(f"{name} must be an address like 'Name <mail@example.nl>': {exc}") from None
    return value


def _bounce_address(value: str) -> str:
    """A bare address whose local part has no "+": the token goes after one."""
    address = value.strip()
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SettingsError(f"MAILER_BOUNCE_ADDRESS must be an address like bounce@mail.example.nl: {exc}") from None
    if "+" in address.partition("@")[0] or "<" in address:
        raise SettingsError("MAILER_BOUNCE_ADDRESS must be a bare address without '+' in its local part, "
                            "like bounce@mail.example.nl (each mail adds +TOKEN)")
    return address.lower()


def _mailbox_url(value: str) -> str:
    """imaps://user:password@host[:port]/FOLDER; plain imap:// only to this machine."""
    from urllib.parse import urlsplit

    url = urlsplit(value)
    local = url.hostname in ("localhost", "127.0.0.1", "::1")
    if url.scheme not in ("imaps", "imap") or not url.hostname or not url.username or url.password is None:
        raise SettingsError("MAILER_BOUNCE_MAILBOX must be like imaps://user:password@imap.example.nl/INBOX")
    if url.scheme == "imap" and not local:
        raise SettingsError("MAILER_BOUNCE_MAILBOX: plain imap:// only to this machine; use imaps:// for "
                            f"{url.hostname}")
    return value


def _dkim(env: dict[str, str]) -> dict:
    selector, key_file = env.get("MAILER_DKIM_SELECTOR"), env.get("MAILER_DKIM_KEY_FILE")
    if bool(selector) != bool(key_file):
        raise SettingsError("MAILER_DKIM_SELECTOR and MAILER_DKIM_KEY_FILE go together: set both or neither")
    if not selector:
        return {}
    return {"dkim_selector": selector, "dkim_key_file": Path(key_file), "dkim_domain": env.get("MAILER_DKIM_DOMAIN")}


def _window(env: dict[str, str]) -> SendWindow:
    spec = env.get("MAILER_DRIP_WINDOW") or DRIP_WINDOW
    zone = env.get("MAILER_DRIP_TIMEZONE") or DRIP_TIMEZONE
    # Unset: the default; set but empty: no holidays.
    country = env.get("MAILER_DRIP_HOLIDAYS", DRIP_HOLIDAYS).strip().upper()
    quiet_spec = (env.get("MAILER_DRIP_QUIET_DATES") or "").strip()
    try:
        window = SendWindow.parse(spec, zone)
    except WindowError as exc:
        name = "MAILER_DRIP_TIMEZONE" if "time zone" in str(exc) else "MAILER_DRIP_WINDOW"
        raise SettingsError(f"{name}: {exc}") from None
    try:
        country = check_country(country) if country and country != DRIP_HOLIDAYS else country
    except WindowError as exc:
        raise SettingsError(f"MAILER_DRIP_HOLIDAYS: {exc}; leave it empty for none") from None
    try:
        quiet = parse_quiet_dates(quiet_spec)
    except WindowError as exc:
        raise SettingsError(f"MAILER_DRIP_QUIET_DATES: {exc}") from None
    window = window.with_closed_days(holidays=country or None, quiet=quiet)
    if quiet:
        # Quiet dates (with the holidays) could leave the window shut for good: find out now,
        # not at the first drip run. Only when they are set: the check loads the holiday calendar.
        try:
            window.next_opening(datetime.now(timezone.utc))
        except WindowError as exc:
            raise SettingsError(f"MAILER_DRIP_QUIET_DATES: {exc}") from None
    return window


def _storage_url(value: str) -> str:
    if value.split("://", 1)[0] not in ("memory", "redis", "rediss", "redis+unix"):
        raise SettingsError(f"MAILER_RATELIMIT_STORAGE_URL must be memory:// or redis://HOST:PORT, got {value!r}")
    return value


def _rate_limit(name: str, value: str) -> str:
    try:
        parse_many(value)
    except ValueError:
        raise SettingsError(f"{name} must look like '10 per minute;50 per hour', got {value!r}") from None
    return value


def _number(name: str, env: dict[str, str], default, kind, minimum):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {'whole ' if kind is int else ''}number, got {raw!r}") from None
    if number < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return number


def _flag(name: str, env: dict[str, str], default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")
