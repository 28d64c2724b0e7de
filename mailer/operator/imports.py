"""Bringing leads over from an earlier tool: every row checked first, then all in one transaction.

Columns (a header row; comma or semicolon separated; UTF-8, with or without a byte order mark):
  email                required
  first_name           optional
  magnet               optional, a lead magnet slug (default: the default magnet)
  marketing_consent    optional: yes/no (also ja/nee, true/false, 1/0); default no
  signed_up_at         optional: ISO 8601 date or time (default: now)
  consent_at, consent_source
                       required when marketing_consent is yes: when and how the person agreed
  consent_ip, consent_text
                       optional evidence: the address it came from, the exact text they saw
Imported leads are confirmed (the earlier tool did the opt-in); they are not enrolled in a
drip sequence.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.content.files import Content
from mailer.errors import MailerError
from mailer.funnel.addresses import clean_name, normalise_email
from mailer.operator import figures
from mailer.operator.people import address_hash
from mailer.store import queries
from mailer.store.database import Database
from mailer.store.tables import ConsentEvent, ConsentKind, Lead, LeadStatus, Suppression

COLUMNS = {"email", "first_name", "magnet", "marketing_consent", "signed_up_at",
           "consent_at", "consent_source", "consent_ip", "consent_text"}
YES, NO = {"yes", "ja", "true", "1", "y", "j"}, {"no", "nee", "false", "0", "n", ""}


@dataclass(frozen=True)
class Row:
    line: int
    email: str
    first_name: str
    magnet: str
    marketing: bool
    signed_up_at: datetime
    consent_at: datetime | None
    consent_source: str | None
    consent_ip: str | None
    consent_text: str | None


@dataclass
class Checked:
    rows: list[Row]
    errors: list[str]  # "line N: what is wrong"

    @property
    def marketing(self) -> int:
        return sum(row.marketing for row in self.rows)


class ImportRefused(MailerError):
    """The file has problems; nothing was imported. `errors` lists them by line."""

    def __init__(self, checked: Checked):
        super().__init__(f"{len(checked.errors)} problem(s); nothing imported")
        self.errors = checked.errors


def import_leads(db: Database, content: Content, data: bytes, source: str, keys: tuple[str, ...],
                 now: datetime, dry_run: bool = False) -> Checked:
    """Check every row of a CSV file (also against the leads and the erased addresses) and,
    unless `dry_run`, import them all in one transaction. ImportRefused if any row has a
    problem: then nothing is written. Returns what was (or, dry, would be) imported."""
    checked = read(data, content, now)
    with (db.read_only() if dry_run else db.transaction()) as session:
        if checked.rows:
            check_against_database(session, checked, keys)
        if checked.errors:
            raise ImportRefused(checked)
        if not dry_run:
            write(session, checked.rows, source, now)
    return checked


def read(data: bytes, content: Content, now: datetime) -> Checked:
    """Parse and check every row; nothing is written."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Checked([], [f"the file is not UTF-8 (byte {exc.start}); save it as CSV UTF-8"])
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip().lower() for name in reader.fieldnames or []]
    while header and not header[-1]:  # a trailing separator, as spreadsheets sometimes write
        header.pop()
    if "email" not in header:
        return Checked([], ["line 1: the header has no 'email' column"])
    unknown = sorted(set(header) - COLUMNS)
    if unknown:
        return Checked([], [f"line 1: unknown column(s) {', '.join(unknown)}; known: {', '.join(sorted(COLUMNS))}"])
    reader.fieldnames = header
    rows, errors, seen = [], [], {}
    for record in reader:
        line = reader.line_num
        extra = [v for v in record.get(None) or [] if v.strip()]
        values = {k: (v or "").strip() for k, v in record.items() if k}
        if not any(values.values()) and not extra:
            continue  # an empty row (";;;;" from a spreadsheet)
        if extra:
            errors.append(f"line {line}: more cells than the header has columns")
            continue
        try:
            row = _row(line, values, content, now)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        if row.email in seen:
            errors.append(f"line {line}: {row.email} is also on line {seen[row.email]}")
            continue
        seen[row.email] = line
        rows.append(row)
    return Checked(rows, errors)


def check_against_database(session: Session, checked: Checked, keys: tuple[str, ...]) -> None:
    """Add an error for each row whose address is already a lead or was erased."""
    emails = [row.email for row in checked.rows]
    existing = {}
    for start in range(0, len(emails), 500):
        chunk = emails[start:start + 500]
        existing.update(session.execute(select(Lead.email, Lead.status).where(Lead.email.in_(chunk))).all())
    suppressed = set()
    for key in keys:
        hashes = {address_hash(key, email): email for email in emails}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes)[start:start + 500]
            suppressed |= {hashes[h] for h in session.scalars(
                select(Suppression.address_hash).where(Suppression.address_hash.in_(chunk)))}
    for row in checked.rows:
        if row.email in existing:
            checked.errors.append(f"line {row.line}: {row.email} is already a lead ({existing[row.email]})")
        elif row.email in suppressed:
            checked.errors.append(f"line {row.line}: {row.email} was erased on request; it is not brought back")
    checked.errors.sort(key=lambda e: int(e.split(":")[0].split()[1]) if e.startswith("line ") else 0)


def write(session: Session, rows: list[Row], source: str, now: datetime) -> None:
    """Store the checked rows with their consent evidence (the caller's one transaction). The
    rows are dated in the past (signed_up_at, consent_at): the overview's stored days from the
    earliest of them on are deleted in the same transaction, to be counted again (figures.daily)."""
    if rows:
        moments = [moment for row in rows for moment in (row.signed_up_at, row.consent_at) if moment is not None]
        figures.forget_days(session, min(moment.astimezone(timezone.utc).date() for moment in moments))
    notices: dict[str, int] = {}
    for row in rows:
        lead = Lead(email=row.email, first_name=row.first_name, status=LeadStatus.CONFIRMED.value,
                    magnet=row.magnet, marketing_consent=row.marketing, created_at=row.signed_up_at,
                    confirmed_at=row.signed_up_at, updated_at=now)
        session.add(lead)
        session.flush()
        notice_id = _notice(session, row.consent_text, notices, now) if row.consent_text else None
        session.add(ConsentEvent(
            lead_id=lead.id, kind=ConsentKind.IMPORT.value, at=row.consent_at or row.signed_up_at, magnet=row.magnet,
            marketing_consent=row.marketing, ip=row.consent_ip, user_agent=None,
            form=row.consent_source or f"import:{source}"[:100], notice_id=notice_id,
        ))


def _row(line: int, values: dict[str, str], content: Content, now: datetime) -> Row:
    email = normalise_email(values.get("email", "")) if values.get("email") else None
    if email is None:
        raise ValueError("email is empty")
    magnet = values.get("magnet") or content.organisation.default_magnet
    if magnet not in content.magnets:
        raise ValueError(f"magnet {magnet!r} is not one of {', '.join(content.magnets)}")
    consent = values.get("marketing_consent", "").lower()
    if consent not in YES | NO:
        raise ValueError(f"marketing_consent must be yes or no, got {values['marketing_consent']!r}")
    marketing = consent in YES
    consent_at = _time(values, "consent_at")
    if marketing and (consent_at is None or not values.get("consent_source")):
        raise ValueError("marketing_consent yes needs consent_at and consent_source (the evidence)")
    ip = values.get("consent_ip") or None
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ValueError(f"consent_ip {ip!r} is not an IP address") from None
    source = values.get("consent_source") or None
    if source is not None and len(source) > 100:
        raise ValueError("consent_source is longer than 100 characters")
    return Row(line, email, clean_name(values.get("first_name")), magnet, marketing,
               _time(values, "signed_up_at") or now, consent_at, source, ip, values.get("consent_text") or None)


def _time(values: dict[str, str], name: str) -> datetime | None:
    raw = values.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name} {raw!r} is not a date or time like 2025-03-01 or 2025-03-01T10:30:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _notice(session: Session, text: str, cache: dict[str, int], now: datetime) -> int:
    """The stored notice for a consent text from the file (versioned by its hash)."""
    if text not in cache:
        version = "import-" + hashlib.sha256(text.encode()).hexdigest()[:8]
        cache[text], _ = queries.notice_id(session, version=version, text=text, now=now)
    return cache[text]
