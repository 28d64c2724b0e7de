"""/beheer/outbox: the outbox. Counts by status; the rows of the chosen statuses (deferred and
failed unless asked otherwise), newest first, a page at a time (keyset by id), each with the
server's replies; retry or cancel one or many (editors); the marketing pause: pause (editors),
resume (owners)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from mailer.operator import outbox as operator
from mailer.store.tables import OutboxStatus
from mailer.web.admin import bp, common

STATUS_NAMES = {
    OutboxStatus.QUEUED: "wachtend",
    OutboxStatus.SENDING: "bezig",
    OutboxStatus.DEFERRED: "uitgesteld",
    OutboxStatus.SENT: "verstuurd",
    OutboxStatus.FAILED: "mislukt",
    OutboxStatus.CANCELLED: "geannuleerd",
}
BADGES = {OutboxStatus.SENT: "ok", OutboxStatus.DEFERRED: "warn", OutboxStatus.FAILED: "bad"}
KIND_NAMES = {"confirm": "bevestiging", "guide": "gids", "consent": "toestemming", "drip": "reeks",
              "newsletter": "nieuwsbrief"}
# Sent mail is most of the table and is shown per lead on the lead's page; listing or counting
# it here would read all of it (the page reads its statuses through ix_outbox_due).
LISTED = operator.UNSENT
VALUES = {status.value for status in LISTED}
MOST_IDS = 500  # a page shows 50; more in one post is not a person ticking boxes
DEFAULT_PAUSE_REASON = "gepauzeerd in het beheer"


def _statuses(values: list[str]) -> tuple[tuple[OutboxStatus, ...], bool]:
    """The statuses asked for (the default when none), and whether one was unknown."""
    known = tuple(status for status in LISTED if status.value in values)
    unknown = any(value not in VALUES for value in values)
    return known or operator.NEEDS_A_LOOK, unknown


def _back():
    """The outbox page as it was: the same statuses."""
    chosen = [value for value in request.form.getlist("status") if value in VALUES]
    return redirect(url_for("admin.outbox", status=chosen or None))


def _ids() -> list[int] | None:
    """The ticked rows' ids; None when one is not a number (a tampered form)."""
    try:
        ids = sorted({int(value) for value in request.form.getlist("id")})
    except ValueError:
        return None
    return ids if all(0 < value < 2**31 for value in ids) else None


@bp.get("/outbox")
def outbox():
    services = common.services()
    chosen, unknown = _statuses(request.args.getlist("status"))
    before = request.args.get("voor", type=int)
    if before is not None and not 0 < before < 2**31:  # not an id: the first page
        before = None
    found = operator.page(services.db, chosen, before=before)
    return render_template("beheer/outbox.html", page=found, chosen=[s.value for s in chosen], unknown=unknown,
                           before=before, statuses=list(found.counts), listed=LISTED, names=STATUS_NAMES,
                           badges=BADGES, kinds=KIND_NAMES)


def _rows_action(action: str, change, verb: str, refused_text: str):
    ids = _ids()
    if ids is None:
        flash("Dit formulier klopte niet. Open de pagina opnieuw en probeer het nog eens.", "error")
        return _back()
    if not ids:
        flash("Vink eerst een of meer mails aan.", "error")
        return _back()
    if len(ids) > MOST_IDS:
        flash(f"Kies hoogstens {MOST_IDS} mails tegelijk.", "error")
        return _back()
    changed = change(ids)
    # Every id in the detail (the target's column is short): the log says which rows, however many.
    common.act(action, f"outbox {ids[0]}" if len(ids) == 1 else f"outbox ({len(ids)} rows)",
               f"rows {' '.join(map(str, ids))}: {changed.count} changed"
               + (f"; refused {' '.join(map(str, changed.refused))}" if changed.refused else ""))
    message = f"{changed.count} {'mail' if changed.count == 1 else 'mails'} {verb}."
    if changed.refused:
        message += f" {refused_text}: {', '.join(map(str, changed.refused))}."
    flash(message, "info")
    return _back()


@bp.post("/outbox/opnieuw")
@common.requires("outbox.retry")
def outbox_retry():
    return _rows_action("outbox.retry", lambda ids: operator.retry(common.services().db, ids, common.now()),
                        "opnieuw in de wachtrij gezet",
                        "Niet opnieuw geprobeerd (niet mislukt of geannuleerd, of het adres is onbestelbaar)")


@bp.post("/outbox/annuleren")
@common.requires("outbox.cancel")
def outbox_cancel():
    return _rows_action("outbox.cancel", lambda ids: operator.cancel(common.services().db, ids,
                                                                     "cancelled by an operator in the dashboard"),
                        "geannuleerd", "Niet geannuleerd (al verstuurd, bezig of al geannuleerd)")


@bp.post("/outbox/pauzeren")
@common.requires("outbox.pause")
def outbox_pause():
    reason = " ".join(request.form.get("reden", "").split())[:500] or DEFAULT_PAUSE_REASON
    paused = operator.pause(common.services().db, reason, common.now())
    common.act("outbox.pause", "marketing", reason if paused else "was paused already")
    flash("Marketingmail is gepauzeerd. Bevestigingen en gidsen gaan gewoon door." if paused
          else "Marketingmail was al gepauzeerd.", "info")
    return _back()


@bp.post("/outbox/hervatten")
@common.requires("outbox.resume")
def outbox_resume():
    resumed = operator.resume(common.services().db)
    common.act("outbox.resume", "marketing", "" if resumed else "was not paused")
    flash("Marketingmail wordt weer verstuurd." if resumed else "Marketingmail was niet gepauzeerd.", "info")
    return _back()
