"""The dashboard's list of leads: newest first, a page at a time, with `mailer export`'s filters
and a search (export.Filters: the download of the list is the export of the same filters).

Pages are keyset pages on the id, never OFFSET: a page is "the next 50 below this id" (or
"above", going back), so a page deep in the list costs what the first one does. Migration 0011
gives each filter an index that ends in the id (status, magnet) and the search its prefix
indexes, so on a million leads a page reads about its own fifty entries. Nothing counts the
whole table: the number of matches is counted up to COUNTED_UP_TO, and shown as "more than" beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, text

from mailer.content.files import Content
from mailer.operator.export import Filters
from mailer.operator.figures import UnknownMagnet
from mailer.store.database import Database
from mailer.store.tables import UTCDateTime

PAGE = 50
COUNTED_UP_TO = 1000
COLUMNS = "id, email, first_name, status, magnet, marketing_consent, created_at"


@dataclass(frozen=True)
class Row:
    id: int
    email: str
    first_name: str
    status: str
    magnet: str
    marketing_consent: bool
    signed_up_at: datetime


@dataclass(frozen=True)
class Page:
    rows: list[Row]  # newest first
    newer: int | None  # the cursor of the page before (towards the newest): show leads above this id
    older: int | None  # the cursor of the page after: show leads below this id
    matching: int  # leads that match, counted up to COUNTED_UP_TO + 1

    @property
    def more(self) -> bool:
        """More leads match than were counted."""
        return self.matching > COUNTED_UP_TO


def page(db: Database, content: Content, filters: Filters, *, before: int | None = None,
         after: int | None = None, size: int = PAGE) -> Page:
    """One page of the leads that match: the `size` newest below id `before`, or, going back,
    the `size` oldest above id `after` (shown newest first); without either, the newest. A
    page going back that would be short is the first page. UnknownMagnet for a magnet the
    content does not have."""
    if filters.magnet and filters.magnet not in content.magnets:
        raise UnknownMagnet(filters.magnet, content.magnets)
    with db.read_only() as session:
        where, params = filters.sql(session.get_bind().dialect)

        def rows(condition: str, order: str, **values) -> list[Row]:
            statement = text(f"SELECT {COLUMNS} FROM leads WHERE {where}{condition} ORDER BY id {order} LIMIT :n")
            statement = statement.columns(created_at=UTCDateTime(), marketing_consent=Boolean())
            return [Row(r.id, r.email, r.first_name, r.status, r.magnet, bool(r.marketing_consent), r.created_at)
                    for r in session.execute(statement, {**params, **values, "n": size + 1})]

        def exists(condition: str, order: str, **values) -> bool:
            # Ordered, so that it reads from the cursor on (a plain scan reads from the oldest row).
            statement = text(f"SELECT id FROM leads WHERE {where}{condition} ORDER BY id {order} LIMIT 1")
            return session.execute(statement, {**params, **values}).first() is not None

        found = None
        if after is not None:
            found = rows(" AND id > :after", "ASC", after=after)
            if len(found) > size:
                found = found[:size][::-1]
                newer, older = found[0].id, found[-1].id if exists(" AND id < :id", "DESC", id=found[-1].id) else None
            else:
                found = None  # fewer than a page above: that is the first page
        if found is None:
            cursor = before if after is None else None
            found = rows(" AND id < :before" if cursor is not None else "", "DESC", before=cursor)
            older = found[size - 1].id if len(found) > size else None
            found = found[:size]
            top = found[0].id if found else cursor
            newer = top if cursor is not None and exists(" AND id > :id", "ASC", id=top) else None
        counted = session.execute(text(f"SELECT count(*) FROM (SELECT 1 FROM leads WHERE {where} LIMIT :cap) AS m"),
                                  {**params, "cap": COUNTED_UP_TO + 1}).scalar_one()
    return Page(found, newer, older, counted)
