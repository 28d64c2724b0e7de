"""Thirty days of a drip sequence, walked with a settable clock, on SQLite and on PostgreSQL.

The scheduler is played by a loop that runs the drip job and the sender every half hour.
It crosses the send window's edges, two weekends, a week of downtime, an unsubscribe in the
middle and a change to the live sequence; every expected send time below is worked out by
hand from the sequence file (days 2, 4, 6, 10, 14, 19, 25 after confirming; Mon-Fri
09:00-17:00 Europe/Amsterdam, which is UTC+1 in December).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

from conftest import Visitor
from sqlalchemy import select
from test_funnel import deliver, link_in

from mailer.delivery.transports.memory import MemoryTransport
from mailer.resources import shipped
from mailer.store.tables import ConsentEvent, Enrollment, Lead, Outbox
from mailer.web import create_app

UTC = timezone.utc


def at(day: int, hour: int) -> datetime:
    """December 2026, UTC."""
    return datetime(2026, 12, day, hour, 0, tzinfo=UTC)


def sent_steps(services, email: str) -> list[tuple[str, datetime]]:
    with services.db.read_only() as session:
        rows = session.execute(
            select(Outbox.step, Outbox.sent_at).join(Lead, Lead.id == Outbox.lead_id)
            .where(Lead.email == email, Outbox.kind == "drip", Outbox.status == "sent").order_by(Outbox.sent_at)
        )
        return [(step, sent_at) for step, sent_at in rows]


class Walk:
    """The scheduler, played by hand: every half hour the drip job and one sender pass."""

    def __init__(self, services, clock):
        self.services, self.clock = services, clock
        self.transport = MemoryTransport()
        self.down: list[tuple[datetime, datetime]] = []

    def restart(self, services) -> None:
        """The service restarts with other settings or content (a new process)."""
        self.services = services

    def until(self, moment: datetime) -> None:
        while self.clock.now() < moment:
            step = 30 * 60 - self.clock.now().timestamp() % (30 * 60)  # to the next :00 or :30
            self.clock.advance(seconds=step)
            now = self.clock.now()
            if any(start <= now < end for start, end in self.down):
                continue
            self.services.drip.run(self.services.db, now)
            self.services.sender(self.transport, worker="walk").dispatch_all()


def changed_content(tmp_path, services) -> str:
    """The sequence file after an operator's edit: a step added far ahead, one added in the
    past, and the last one removed."""
    content = tmp_path / "changed-content"
    shutil.copytree(shipped("content"), content)
    path = content / "sequences" / "mini-guide.toml"
    text = path.read_text(encoding="utf-8")
    head, _, _removed_last = text.rpartition("[[steps]]")
    head = head.replace('[[steps]]\nkey = "nog-niet-gelezen"', '''[[steps]]
key = "vroeg"
days = 3
subject = "Toegevoegd op dag 3"
template = "mini-guide/03-lef-en-eigenheid"

[[steps]]
key = "nog-niet-gelezen"''')
    path.write_text(head + '''[[steps]]
key = "terugblik"
days = 21
subject = "Toegevoegd op dag 21"
template = "mini-guide/06-cultuurverandering"
''', encoding="utf-8")
    return str(content)


def test_thirty_days_of_drip_mail(services, make_services, clock, tmp_path):
    client = create_app(services=services).test_client()
    visitor = Visitor(client, clock)
    walk = Walk(services, clock)

    def sign_up_and_confirm(email: str, name: str, confirm_at: datetime, download: bool) -> str:
        visitor.sign_up(email, first_name=name, marketing=True)
        [confirmation] = deliver(services)
        clock.set(confirm_at)
        assert client.post(link_in(confirmation, "/bevestig/")).status_code == 200
        [guide] = deliver(services)
        if download:
            assert client.get(link_in(guide, "/download/")).status_code == 200
        return confirmation["To"].addresses[0].addr_spec

    clock.set(at(1, 8) + timedelta(minutes=58))
    sign_up_and_confirm("anne@gemeente.nl", "Anne", at(1, 9), download=True)
    clock.set(at(1, 8) + timedelta(minutes=59))
    sign_up_and_confirm("bram@provincie.nl", "Bram", at(1, 9), download=False)
    walk.until(at(1, 15) + timedelta(minutes=58))
    # 17:00 in Amsterdam: the window closes as Carla's steps fall due.
    sign_up_and_confirm("carla@rijksoverheid.nl", "Carla", at(1, 16), download=False)

    walk.until(at(8, 11))
    bram_mails = [m for m in walk.transport.parsed() if m["To"].addresses[0].addr_spec == "bram@provincie.nl"]
    unsubscribe = bram_mails[-1]["List-Unsubscribe"].strip("<>").removeprefix("https://guide.example.nl")
    answer = client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200

    walk.down.append((at(9, 0), at(16, 11)))  # a week without a scheduler
    walk.until(at(18, 7))
    walk.restart(make_services(services.settings.database_url, MAILER_CONTENT_PATH=changed_content(tmp_path, services)))
    walk.until(datetime(2027, 1, 2, tzinfo=UTC))

    assert sent_steps(services, "anne@gemeente.nl") == [
        ("gids-in-de-praktijk", at(3, 9)),       # day 2, Thursday 10:00
        # nog-niet-gelezen: skipped, Anne downloaded the guide
        ("lef-en-eigenheid", at(7, 9)),           # day 6, Monday
        ("politieke-sensitiviteit", at(16, 11)),  # day 10 fell in the downtime: the first tick after it
        ("ontwikkelprogramma", at(17, 11)),       # day 14, also missed: one day later, not bunched
        ("cultuurverandering", at(21, 8)),        # day 19 is a Sunday: Monday 09:00
        ("terugblik", at(22, 9)),                 # added on day 17 at day 21, ahead of her
        # vroeg (added at day 3, behind her) and kennismaken (removed) never go out
    ]
    assert sent_steps(services, "bram@provincie.nl") == [
        ("gids-in-de-praktijk", at(3, 9)),
        ("nog-niet-gelezen", at(7, 8)),           # day 4 is a Saturday: Monday 09:00
        ("lef-en-eigenheid", at(8, 8)),           # day 6 was Monday 10:00, but one a day: Tuesday
        # unsubscribed on Tuesday by one click: nothing more
    ]
    assert sent_steps(services, "carla@rijksoverheid.nl") == [
        ("gids-in-de-praktijk", at(4, 8)),        # Thursday 17:00 is closed: Friday 09:00
        ("nog-niet-gelezen", at(7, 8)),
        ("lef-en-eigenheid", at(8, 8)),
        ("politieke-sensitiviteit", at(16, 11)),
        ("ontwikkelprogramma", at(17, 11)),
        ("cultuurverandering", at(21, 8)),
        ("terugblik", at(23, 8)),                 # Tuesday 17:00 is closed: Wednesday 09:00
    ]
    with services.db.read_only() as session:
        bram = session.scalar(select(Lead).where(Lead.email == "bram@provincie.nl"))
        assert (bram.status, bram.marketing_consent) == ("unsubscribed", False)
        assert session.scalar(select(Enrollment.status).where(Enrollment.lead_id == bram.id)) == "stopped"
        assert session.scalars(select(ConsentEvent.form).where(
            ConsentEvent.lead_id == bram.id, ConsentEvent.kind == "unsubscribe")).all() == ["one-click"]
    # What went over the wire matches the outbox: 6 + 3 + 7 drip mails, each once.
    drip_mails = [m for m in walk.transport.parsed() if m["List-Id"]]
    assert len(drip_mails) == 16
    assert len({m["Message-ID"] for m in drip_mails}) == 16
