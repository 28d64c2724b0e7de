"""/beheer/reeksen: each follow-up sequence with its steps (delay, sends, clicks) and what
`mailer drip plan` says about changes waiting in the files; a step's page with its mail at
desktop and phone width (sandboxed frames) and a test send."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from mailer.errors import DeliveryError, InvalidRequest, MailerError
from mailer.operator import figures
from mailer.web.admin import bp, common
from mailer.web.admin.newsletters import GENERIC, failed_test, masked, relay_answer

NO_STEP = ("Stap niet gevonden", "Deze reeks of stap staat niet (meer) in de inhoudsbestanden.")
PLAN_STATES = {
    "new": "Nog niet gestart: de eerste drip-run legt deze stappen vast. Er is nog niets om mee te vergelijken.",
    "unchanged": "Geen wijzigingen sinds de laatste drip-run.",
    "changed": "Het bestand is gewijzigd sinds de laatste drip-run. Dit gebeurt bij de eerste drip-run nadat "
               "de dienst (mailer serve of mailer worker) opnieuw is gestart met dit bestand:",
}
SKIP_NAMES = {  # a step's skip_if (content/files.py CONDITIONS)
    "downloaded": "Overgeslagen als de lead de gids al downloadde",
    "not-downloaded": "Overgeslagen als de lead de gids nog niet downloadde",
    "clicked": "Overgeslagen als de lead al op een link in deze reeks klikte",
    "not-clicked": "Overgeslagen als de lead nog niet op een link in deze reeks klikte",
}


@bp.get("/reeksen")
def sequences():
    services = common.services()
    found = figures.sequence_figures(services.db, services.content, services.settings.drip_window, common.now())
    return render_template("beheer/sequences.html", sequences=found, plan_states=PLAN_STATES,
                           skip_names=SKIP_NAMES, magnets=services.content.magnets)


@bp.get("/reeksen/<slug>/<key>")
def sequence_step(slug: str, key: str):
    from mailer.operator import sending  # loads the mail side: only when a view needs it

    services = common.services()
    try:
        found = sending.step_mail(services.db, services.renderer, services.content, f"{slug}/{key}")
    except InvalidRequest:
        return common.error_page(404, *NO_STEP)
    return render_template("beheer/sequence.html", found=found, days=found.step.delay.total_seconds() / 86400,
                           skip_names=SKIP_NAMES, to=request.args.get("aan", ""))


@bp.get("/reeksen/<slug>/<key>/voorbeeld")
def step_preview(slug: str, key: str):
    """The rendered mail alone, for the sandboxed frames of the step's page (its own CSP)."""
    from mailer.operator import sending  # loads the mail side: only when a view needs it

    services = common.services()
    try:
        mail = sending.render_step(services.db, services.renderer, services.content, f"{slug}/{key}")
    except InvalidRequest:
        return common.error_page(404, *NO_STEP)
    return mail.html


@bp.post("/reeksen/<slug>/<key>/test")
@common.requires("sequence.test")
def sequence_test(slug: str, key: str):
    from mailer.operator import sending  # loads the mail side: only when a view needs it

    services = common.services()
    to = request.form.get("to", "").strip()
    back = url_for("admin.sequence_step", slug=slug, key=key)
    target = f"step {slug}/{key}"
    try:
        sent = sending.send_test(services.db, services.composer, services.transport(), services.content,
                                 f"{slug}/{key}", to)
    except DeliveryError as exc:
        common.act("sequence.test", target, f"relay refused it ({exc.code or 'no reply'})", "failed")
        flash("De testmail is niet verstuurd: de mailserver weigerde hem. Probeer het later opnieuw.", "error")
        flash(f"Antwoord van de mailserver: {relay_answer(exc)}", "reden")
        return redirect(url_for("admin.sequence_step", slug=slug, key=key, aan=to))
    except InvalidRequest as exc:
        if exc.option == "STEP":
            return common.error_page(404, *NO_STEP)
        common.act("sequence.test", target, failed_test(exc, to), "failed")
        flash("Dit is geen geldig e-mailadres. Er is niets verstuurd.", "error")
        return redirect(url_for("admin.sequence_step", slug=slug, key=key, aan=to))
    except MailerError as exc:
        common.act("sequence.test", target, failed_test(exc, to), "failed")
        flash(GENERIC, "error")
        flash(str(exc), "reden")
        return redirect(back)
    code, _text = sent.reply
    common.act("sequence.test", target, f"test to {masked(sent.address)}, relay answered {code}")
    flash(f"De testmail van ‘{key}’ is verstuurd naar {sent.address}.", "info")
    return redirect(back)

