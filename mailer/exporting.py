"""Streaming lead export: CSV (RFC 4180) or JSON Lines, in primary-key ranges.

The database writes each line (quoting, formula neutralising, dates) in SQL, and Python
only moves batches of finished text: the export runs at the speed of the database's own
CSV output, and memory stays one batch whatever the number of leads. Erased leads are
deleted rows, so they cannot appear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Callable

from sqlalchemy import bindparam, text

from .models import UTCDateTime

FIELDS = ("id", "email", "first_name", "status", "magnet", "marketing_consent", "signed_up_at", "confirmed_at")
TEXT_FIELDS = {"email": "email", "first_name": "first_name", "status": "status", "magnet": "magnet"}
TIME_FIELDS = {"signed_up_at": "created_at", "confirmed_at": "confirmed_at"}
BATCH_IDS = 20_000  # primary-key range per query: a few MB of text at most
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection):
# such a cell gets a leading apostrophe, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Filters:
    statuses: tuple[str, ...] = ()
    magnet: str | None = None
    marketing_consent: bool | None = None
    since: datetime | None = None  # signed up at or after
    until: datetime | None = None  # signed up before

    def sql(self) -> tuple[str, dict]:
        clauses, params = [], {}
        if self.statuses:
            clauses.append("status IN :statuses")
            params["statuses"] = list(self.statuses)
        if self.magnet:
            clauses.append("magnet = :magnet")
            params["magnet"] = self.magnet
        if self.marketing_consent is not None:
            clauses.append("marketing_consent = :consent")
            params["consent"] = self.marketing_consent
        if self.since:
            clauses.append("created_at >= :since")
            params["since"] = self.since
        if self.until:
            clauses.append("created_at < :until")
            params["until"] = self.until
        return " AND ".join(clauses) or "1 = 1", params


@dataclass
class Format:
    kind: str = "csv"  # csv or jsonl
    fields: tuple[str, ...] = FIELDS
    excel: bool = False  # semicolons and a byte order mark: what Dutch Excel opens correctly
    separator: str = field(init=False)

    def __post_init__(self):
        self.separator = ";" if self.excel else ","

    @property
    def line_end(self) -> str:
        return "\n" if self.kind == "jsonl" else "\r\n"  # RFC 4180: CRLF

    def header(self) -> str:
        if self.kind == "jsonl":
            return ""
        return ("\ufeff" if self.excel else "") + self.separator.join(self.fields) + self.line_end


def export(connection, filters: Filters, fmt: Format, out: BinaryIO,
           progress: Callable[[int, int], None] = lambda step, total: None) -> int:
    """Write the matching leads to `out`, oldest first; return how many. `progress` hears
    (ids covered by this batch, ids to cover in all) after each batch."""
    dialect = connection.dialect.name
    where, params = filters.sql()
    line = _json_line(fmt.fields, dialect) if fmt.kind == "jsonl" else _csv_line(fmt.fields, fmt.separator, dialect)
    span = connection.execute(_bind(text(f"SELECT min(id), max(id) FROM leads WHERE {where}"), params), params).one()
    out.write(fmt.header().encode())
    if span[0] is None:
        return 0
    # One finished block of text per primary-key range, so Python handles a few rows, not a
    # million. PostgreSQL orders inside the aggregate; SQLite before 3.44 cannot, but a rowid
    # range is read in rowid order, and the subquery's ORDER BY id costs no sort.
    if dialect == "postgresql":
        batch = text(f"SELECT string_agg(line, :end ORDER BY id), count(*) FROM "
                     f"(SELECT id, {line} AS line FROM leads WHERE id > :low AND id <= :high AND {where}) AS lines")
    else:
        batch = text(f"SELECT group_concat(line, :end), count(*) FROM "
                     f"(SELECT {line} AS line FROM leads WHERE id > :low AND id <= :high AND {where} ORDER BY id)")
    batch = _bind(batch, params)
    total, end = 0, fmt.line_end
    for low in range(span[0] - 1, span[1], BATCH_IDS):
        block, count = connection.execute(batch, {**params, "low": low, "high": low + BATCH_IDS, "end": end}).one()
        if count:
            out.write((block + end).encode())
        total += count
        progress(min(BATCH_IDS, span[1] - low), span[1] - span[0] + 1)
    return total


def _bind(statement, params: dict):
    statement = statement.bindparams(*(bindparam(name, type_=UTCDateTime()) for name in ("since", "until")
                                       if name in params))
    if "statuses" in params:
        statement = statement.bindparams(bindparam("statuses", expanding=True))
    return statement


def _csv_line(fields: tuple[str, ...], separator: str, dialect: str) -> str:
    """One CSV line per lead, written by the database.

    Quoting follows RFC 4180 (a cell with the separator, a quote or a line break is quoted,
    quotes doubled) but is only spent where it can be needed: addresses are validated (no
    quotes, commas or semicolons), status and magnet are slugs; names are free text.
    """
    pg = dialect == "postgresql"
    char = "chr" if pg else "char"
    formula = ", ".join(f"{char}(9)" if c == "\t" else f"{char}(13)" if c == "\r" else f"'{c}'"
                        for c in FORMULA_STARTS)

    def neutralised(col: str) -> str:
        first = f"left({col}, 1)" if pg else f"substr({col}, 1, 1)"
        return f"CASE WHEN {first} IN ({formula}) THEN '''' || {col} ELSE {col} END"

    def free_text(col: str) -> str:
        if pg:
            special = (f"strpos({col}, '\"') + strpos({col}, '{separator}') + strpos({col}, chr(10))"
                       f" + strpos({col}, chr(13)) > 0")
        else:
            special = f"{col} GLOB '*[\"{separator}' || char(10) || char(13) || ']*'"
        quoted = f"'\"' || replace({neutralised(col)}, '\"', '\"\"') || '\"'"
        return f"CASE WHEN {special} THEN {quoted} ELSE {neutralised(col)} END"

    cells = []
    for name in fields:
        if name == "id":
            cells.append("id::text" if pg else "id")
        elif name == "marketing_consent":
            cells.append("CASE WHEN marketing_consent THEN 'yes' ELSE 'no' END")
        elif name in TIME_FIELDS:
            cells.append(f"COALESCE({_sheet_time(TIME_FIELDS[name], dialect)}, '')")
        elif name == "first_name":
            cells.append(free_text("first_name"))
        elif name == "email":
            cells.append(neutralised("email"))
        else:  # status, magnet: slugs
            cells.append(TEXT_FIELDS[name])
    return f" || '{separator}' || ".join(cells)


def _sheet_time(column: str, dialect: str) -> str:
    """'YYYY-MM-DD HH:MM:SS' (UTC): the form spreadsheets read as a date and time."""
    if dialect == "postgresql":
        return f"to_char({column}, 'YYYY-MM-DD HH24:MI:SS')"
    return f"substr({column}, 1, 19)"  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC)


def _json_line(fields: tuple[str, ...], dialect: str) -> str:
    pairs = []
    for name in fields:
        if name == "marketing_consent":
            value = "marketing_consent" if dialect == "postgresql" else \
                "json(CASE WHEN marketing_consent THEN 'true' ELSE 'false' END)"
        elif name in TIME_FIELDS:
            value = _iso(TIME_FIELDS[name], dialect)
        else:
            value = TEXT_FIELDS.get(name, name)
        pairs.append(f"'{name}', {value}")
    if dialect == "postgresql":
        return f"json_build_object({', '.join(pairs)})::text"
    return f"json_object({', '.join(pairs)})"


def _iso(column: str, dialect: str) -> str:
    """ISO 8601 in UTC with a Z; NULL stays NULL."""
    if dialect == "postgresql":
        return f"to_char({column}, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC).
    return f"substr({column}, 1, 10) || 'T' || substr({column}, 12, 8) || 'Z'"
