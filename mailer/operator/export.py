"""Streaming lead export: CSV (RFC 4180) or JSON Lines, in primary-key ranges.

The database does the per-lead work: on PostgreSQL its own CSV writer (COPY ... TO STDOUT,
streamed through psycopg), on SQLite a line built in SQL; Python moves finished blocks of
text, one primary-key range at a time, so memory stays one batch whatever the number of
leads. Cells a spreadsheet would run as a formula get a leading apostrophe. Erased leads are
deleted rows: they cannot appear.

The dashboard streams the same bytes to a browser (`stream_leads`): `export` is a loop over
`chunks`, so the command and the download share every line of the formatting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import BinaryIO, Callable, Iterator

from sqlalchemy import text

from mailer.content.files import Content
from mailer.errors import InvalidRequest
from mailer.operator.figures import UnknownMagnet
from mailer.store.database import Database
from mailer.store.tables import UTCDateTime

FIELDS = ("id", "email", "first_name", "status", "magnet", "marketing_consent", "signed_up_at", "confirmed_at")
TIME_FIELDS = {"signed_up_at": "created_at", "confirmed_at": "confirmed_at"}
BATCH_IDS = 20_000  # primary-key range per query: a few MB of text at most
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The highest code point: in a binary (byte-wise) comparison every text that starts with p is
# at least p and below p + TOP, so a prefix is a range of an index.
TOP = 0x10FFFF


@dataclass(frozen=True)
class Filters:
    statuses: tuple[str, ...] = ()
    magnet: str | None = None
    marketing_consent: bool | None = None
    since: datetime | None = None  # signed up at or after
    until: datetime | None = None  # signed up before
    # The dashboard's search: an address that starts with this text (compared in lower case, as
    # addresses are stored), or, without an @, also a first name that starts with it (lower()
    # on both sides: SQLite folds only A-Z, PostgreSQL every letter).
    search: str | None = None

    @classmethod
    def for_days(cls, statuses=(), magnet: str | None = None, marketing_consent: bool | None = None,
                 since: date | None = None, until: date | None = None, *, search: str | None = None) -> "Filters":
        """Filters for leads who signed up on `since` .. `until`: UTC days (as `mailer stats`
        and erased_tallies count them), both inclusive; the command and the dashboard alike."""
        def start(day: date) -> datetime:
            return datetime.combine(day, time(0), timezone.utc)

        return cls(tuple(statuses), magnet, marketing_consent, since and start(since),
                   until and start(until + timedelta(days=1)), (search or "").strip() or None)

    def sql(self, dialect, param: Callable[[str], str] = lambda name: f":{name}") -> tuple[str, dict]:
        """A WHERE condition, and its parameters' values as the dialect stores them. `param`
        writes a placeholder: :name for SQLAlchemy's text(), %(name)s for psycopg's COPY."""
        time = UTCDateTime().bind_processor(dialect)  # aware UTC -> what the column stores
        clauses, params = [], {}
        if self.statuses:
            names = [f"status_{n}" for n in range(len(self.statuses))]
            clauses.append(f"status IN ({', '.join(param(name) for name in names)})")
            params.update(zip(names, self.statuses))
        if self.magnet:
            clauses.append(f"magnet = {param('magnet')}")
            params["magnet"] = self.magnet
        if self.marketing_consent is not None:
            clauses.append(f"marketing_consent = {param('consent')}")
            params["consent"] = self.marketing_consent
        if self.since:
            clauses.append(f"created_at >= {param('since')}")
            params["since"] = time(self.since)
        if self.until:
            clauses.append(f"created_at < {param('until')}")
            params["until"] = time(self.until)
        if self.search:
            clauses.append(self._search(dialect.name, param))
            params["search"] = self.search.lower()
            params["name"] = self.search
        return " AND ".join(clauses) or "1 = 1", params

    def _search(self, dialect: str, param: Callable[[str], str]) -> str:
        """Prefixes as ranges, so an index answers them (migration 0011): SQLite compares
        byte-wise already; on PostgreSQL the comparison and the index are COLLATE "C", as a
        language's collation would order "jan.de" and "jande" together and break the range.
        The matches are a list of ids, so the work is the number of matches whatever the size
        of the table (as a plain OR, SQLite walks the table newest first to find them)."""
        if dialect == "postgresql":
            binary, top = ' COLLATE "C"', f"chr({TOP})"
        else:
            binary, top = "", f"char({TOP})"
        search, name = param("search"), param("name")
        matches = f"SELECT id FROM leads WHERE email{binary} >= {search} AND email{binary} < {search} || {top}"
        if "@" not in self.search:
            first = f"lower(first_name){binary}"
            matches += f" UNION ALL SELECT id FROM leads WHERE {first} >= lower({name}) AND {first} < lower({name}) || {top}"
        return f"id IN ({matches})"


@dataclass(frozen=True)
class Format:
    kind: str = "csv"  # csv or jsonl
    fields: tuple[str, ...] = FIELDS
    excel: bool = False  # semicolons and a byte order mark: what Dutch Excel opens correctly

    @property
    def separator(self) -> str:
        return ";" if self.excel else ","

    @property
    def line_end(self) -> str:
        return "\n" if self.kind == "jsonl" else "\r\n"  # RFC 4180: CRLF

    def header(self) -> str:
        if self.kind == "jsonl":
            return ""
        return ("\ufeff" if self.excel else "") + self.separator.join(self.fields) + self.line_end


def export_leads(db: Database, content: Content, filters: Filters, fmt: Format, out: BinaryIO,
                 progress: Callable[[int, int], None] = lambda step, total: None) -> int:
    """`mailer export`: check the request against the content, then stream the matching leads
    in a read transaction (on SQLite, signups and workers go on meanwhile); return how many."""
    check(content, filters, fmt)
    with db.engine.execution_options(mailer_read_only=True).connect() as connection:
        return export(connection, filters, fmt, out, progress)


def stream_leads(db: Database, content: Content, filters: Filters, fmt: Format) -> Iterator[bytes]:
    """The dashboard's download: the same bytes as `export_leads`, as blocks to stream. The
    request is checked now (UnknownMagnet, InvalidRequest); the read transaction opens with the
    first block and closes after the last, or when the browser goes away (the generator is closed)."""
    check(content, filters, fmt)

    def blocks() -> Iterator[bytes]:
        with db.engine.execution_options(mailer_read_only=True).connect() as connection:
            for block in chunks(connection, filters, fmt):
                yield bytes(block)  # WSGI wants bytes; PostgreSQL's blocks are bytearrays

    return blocks()


def check(content: Content, filters: Filters, fmt: Format) -> None:
    """The request against the content: a known magnet, known fields, --excel only with CSV."""
    if filters.magnet and filters.magnet not in content.magnets:
        raise UnknownMagnet(filters.magnet, content.magnets)
    unknown = [name for name in fmt.fields if name not in FIELDS]
    if unknown or not fmt.fields:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; fields: {','.join(FIELDS)}", "--fields")
    if fmt.excel and fmt.kind != "csv":
        raise InvalidRequest("applies to CSV only", "--excel")


def export(connection, filters: Filters, fmt: Format, out: BinaryIO,
           progress: Callable[[int, int], None] = lambda step, total: None) -> int:
    """Write the matching leads to `out`, oldest first; return how many. `progress` hears
    (ids covered by this batch, ids to cover in all) after each batch."""
    blocks = chunks(connection, filters, fmt, progress)
    while True:
        try:
            out.write(next(blocks))
        except StopIteration as done:
            return done.value


def chunks(connection, filters: Filters, fmt: Format,
           progress: Callable[[int, int], None] = lambda step, total: None) -> Iterator[bytes | bytearray]:
    """The export as blocks of bytes: the header, then one finished block per primary-key
    range that has matching leads. The generator's return value is how many leads."""
    dialect = connection.dialect
    where, params = filters.sql(dialect)
    low, high = connection.execute(text(f"SELECT min(id), max(id) FROM leads WHERE {where}"), params).one()
    header = fmt.header().encode()
    if header:
        yield header
    if low is None:
        return 0
    batch = _copy_batches(connection, fmt, filters) if dialect.name == "postgresql" and \
        fmt.kind == "csv" else _text_batches(connection, fmt, where, params)
    count = 0
    for start in range(low - 1, high, BATCH_IDS):
        block, rows = batch(start, start + BATCH_IDS)
        if block:
            yield block
        count += rows
        progress(min(BATCH_IDS, high - start), high - low + 1)
    return count


def _copy_batches(connection, fmt: Format, filters: Filters):
    """PostgreSQL's own CSV writer (RFC 4180 quoting), streamed a range at a time. It ends
    lines with LF; they become CRLF here (no cell can hold a line break: names and addresses
    are cleaned of control characters before they are stored)."""
    cursor = connection.connection.driver_connection.cursor()
    cursor.execute("SET LOCAL DateStyle TO 'ISO, YMD'")  # timestamps print as 'YYYY-MM-DD HH:MM:SS'
    cells = ", ".join(_cell(name, "postgresql") for name in fmt.fields)
    condition, params = filters.sql(connection.dialect, lambda name: f"%({name})s")  # psycopg's style
    statement = (f"COPY (SELECT {cells} FROM leads WHERE id > %(low)s AND id <= %(high)s "
                 f"AND {condition} ORDER BY id) "
                 f"TO STDOUT WITH (FORMAT csv, DELIMITER '{fmt.separator}')")

    def read(low: int, high: int) -> tuple[bytearray, int]:
        block, rows = bytearray(), 0
        with cursor.copy(statement, {**params, "low": low, "high": high}) as copy:
            for row in copy:  # one row per lead; a range is a few MB
                block += row
                rows += 1
        return block.replace(b"\n", b"\r\n"), rows

    return read


def _text_batches(connection, fmt: Format, where: str, params: dict):
    """One finished block of lines per range from the database: SQLite's CSV lines, or JSON
    Lines on either. PostgreSQL orders inside string_agg; SQLite before 3.44 cannot, but a
    rowid range is read in rowid order and the subquery's ORDER BY id costs no sort."""
    name = connection.dialect.name
    line = _json_line(fmt.fields, name) if fmt.kind == "jsonl" else _csv_line(fmt.fields, fmt.separator)
    if name == "postgresql":
        batch = text(f"SELECT string_agg(line, :end ORDER BY id), count(*) FROM (SELECT id, {line} AS line "
                     f"FROM leads WHERE id > :low AND id <= :high AND {where}) AS lines")
    else:
        batch = text(f"SELECT group_concat(line, :end), count(*) FROM (SELECT {line} AS line FROM leads "
                     f"WHERE id > :low AND id <= :high AND {where} ORDER BY id)")

    def read(low: int, high: int) -> tuple[bytes, int]:
        block, count = connection.execute(batch, {**params, "low": low, "high": high, "end": fmt.line_end}).one()
        return ((block + fmt.line_end).encode() if block else b""), count

    return read


def _cell(name: str, dialect: str) -> str:
    """One field as text, formulas neutralised (the CSV quoting is left to the caller)."""
    if name == "marketing_consent":
        return "CASE WHEN marketing_consent THEN 'yes' ELSE 'no' END"
    if name in TIME_FIELDS:  # 'YYYY-MM-DD HH:MM:SS' in UTC: the form spreadsheets read as a date and time
        column = TIME_FIELDS[name]
        # PostgreSQL prints a timestamp cut to the second in that form itself (DateStyle ISO,
        # its default), much faster than to_char().
        return f"date_trunc('second', {column})" if dialect == "postgresql" else f"substr({column}, 1, 19)"
    if name in ("email", "first_name"):
        return _neutralised(name, dialect)
    return name  # id, status, magnet: a number and slugs


def _neutralised(column: str, dialect: str) -> str:
    # Comparing the first code point is much cheaper than cutting out a one-character string.
    codes = ", ".join(str(ord(c)) for c in FORMULA_STARTS)
    first = f"ascii({column})" if dialect == "postgresql" else f"unicode({column})"
    return f"CASE WHEN {first} IN ({codes}) THEN '''' || {column} ELSE {column} END"


def _csv_line(fields: tuple[str, ...], separator: str) -> str:
    """One RFC 4180 line per lead, built by SQLite with printf(), the cheapest way it has to
    join cells. Quoting is spent only where it can be needed: addresses are validated (no
    quotes, commas or semicolons), status and magnet are slugs, so only names are checked.
    printf() writes NULL (a time never reached) as an empty cell."""
    cells = []
    for name in fields:
        cell = _cell(name, "sqlite")
        if name == "first_name":
            special = f"first_name GLOB '*[\"{separator}' || char(10) || char(13) || ']*'"
            cell = f"CASE WHEN {special} THEN '\"' || replace({cell}, '\"', '\"\"') || '\"' ELSE {cell} END"
        cells.append(cell)
    return f"printf('{separator.join(['%s'] * len(cells))}', {', '.join(cells)})"


def _json_line(fields: tuple[str, ...], dialect: str) -> str:
    pairs = []
    for name in fields:
        if name == "marketing_consent":
            value = "marketing_consent" if dialect == "postgresql" else \
                "json(CASE WHEN marketing_consent THEN 'true' ELSE 'false' END)"
        elif name in TIME_FIELDS:
            value = _iso(TIME_FIELDS[name], dialect)
        else:
            value = name
        pairs.append(f"'{name}', {value}")
    if dialect == "postgresql":
        return f"json_build_object({', '.join(pairs)})::text"
    return f"json_object({', '.join(pairs)})"


def _iso(column: str, dialect: str) -> str:
    """ISO 8601 in UTC with a Z, for JSON; NULL stays NULL."""
    if dialect == "postgresql":
        return f"to_char({column}, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    return f"substr({column}, 1, 10) || 'T' || substr({column}, 12, 8) || 'Z'"
