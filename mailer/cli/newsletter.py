"""`mailer newsletter new|preview|test|audience|send|pause|resume|cancel|status|list`: writing a
newsletter, seeing who would get it, sending it to them (a campaign), and its figures."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mailer.cli.common import day_option, parse_time, services, write_mail


@click.group(help="Newsletters: files in the content folder's newsletters/ (see docs/newsletters.md).")
def newsletter() -> None:
    pass


@newsletter.command("new", help="Write a starting newsletters/SLUG.md into MAILER_CONTENT_PATH (valid as written).\n\n"
                                "Example: mailer newsletter new voorjaar-2027")
@click.argument("slug")
def newsletter_new(slug: str) -> None:
    from mailer.operator.newsletters import write_new

    built = services(check=False)
    written = write_new(built.settings.content_path, built.content, slug)
    click.echo(f"wrote {written.path}")
    click.echo("Edit it, then look at it with `mailer newsletter preview` and `mailer newsletter test`.")


@newsletter.command("preview", help="Write the newsletter as a recipient sees it (.html, or .txt for the text "
                                    "part).\n\nExample: mailer newsletter preview voorjaar-2027 --output nb.html")
@click.argument("slug")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lead", "email", help="Use this lead's name and magnet (links never name a real lead).")
def newsletter_preview(slug: str, output: Path, email: str | None) -> None:
    from mailer.operator.newsletters import render

    built = services()
    write_mail(render(built.db, built.renderer, built.content, slug, email), output)


@newsletter.command("test", help="Send the newsletter now, straight through the configured transport, with "
                                 "[TEST] before its subject; no lead or outbox row changes.\n\n"
                                 "Example: mailer newsletter test voorjaar-2027 --to me@example.nl")
@click.argument("slug")
@click.option("--to", "address", required=True, help="Where to send it.")
@click.option("--lead", "email", help="Use this lead's name and magnet (links never name a real lead).")
@click.option("--ab-subject", "subject", help="Send it with this subject instead: the B of a subject test "
                                              "(`send --ab-subject` asks for a test of it).")
def newsletter_test(slug: str, address: str, email: str | None, subject: str | None) -> None:
    from mailer.errors import DeliveryError
    from mailer.operator.newsletters import send_test

    built = services()
    try:
        sent = send_test(built.db, built.composer, built.transport(), built.content, slug, address, email,
                         now=built.clock.now(), subject=subject)
    except DeliveryError as exc:
        raise click.ClickException(f"not sent: {exc}") from None
    code, text = sent.reply
    click.echo(f"sent newsletter {slug} to {sent.address}: {code} {text}")


@newsletter.command("audience", help="How many leads would get the newsletter now, and a sample of their "
                                     "addresses: confirmed leads with marketing consent, narrowed by the file's "
                                     "[audience] filters and these options (an option replaces the file's filter; "
                                     "--clicked and --not-clicked add to it).\n\n"
                                     "Example: mailer newsletter audience voorjaar-2027 --not-clicked gesprek --json")
@click.argument("slug")
@click.option("--magnet", "magnets", multiple=True, help="Signed up for this lead magnet (repeatable: any of them).")
@click.option("--after", "signed_up_after", callback=day_option, help="Signed up on this date (YYYY-MM-DD) or later.")
@click.option("--before", "signed_up_before", callback=day_option, help="Signed up before this date (YYYY-MM-DD).")
@click.option("--downloaded/--not-downloaded", default=None, help="Downloaded the guide, or never did.")
@click.option("--clicked", multiple=True, help="Clicked this named link (repeatable: all of them).")
@click.option("--not-clicked", "not_clicked", multiple=True, help="Never clicked this named link (repeatable).")
@click.option("--sequence", type=click.Choice(["in", "finished"]),
              help="Still in the follow-up sequence, or finished it (every step handled).")
@click.option("--sample", "sample_size", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="How many addresses to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (keys: count, sample, filters).")
def newsletter_audience(slug: str, as_json: bool, sample_size: int, **given) -> None:
    from mailer.operator.newsletters import audience

    built = services(check=False)
    view = audience(built.db, built.content, slug, built.settings.drip_window.zone, sample_size, **given)
    if as_json:
        click.echo(json.dumps({"newsletter": view.newsletter, "count": view.count, "sample": list(view.sample),
                               "filters": view.filters.describe()}, indent=2))
        return
    filters = view.filters.describe()
    click.echo(f"newsletter {view.newsletter}: {view.count} lead(s): confirmed, with marketing consent"
               + "".join(f", {part}" for part in filters))
    for address in view.sample:
        click.echo(f"  {address}")
    if view.count > len(view.sample):
        click.echo(f"  ... and {view.count - len(view.sample)} more")


@newsletter.command("send", help="Schedule the newsletter for its audience (the file's [audience] filters, frozen "
                                 "now) at --at (default now); the start-campaigns job queues it then and the sender "
                                 "sends it inside the send window. Refused unless `mailer newsletter test` sent "
                                 "exactly this content (or --no-test), and while a campaign of it is live. With "
                                 "--ab-subject: a random --ab-share percent of the audience gets the mail first, "
                                 "half with each subject; --ab-hours after that mail began to go out, the rest gets "
                                 "the subject with more unique clicks (ties: the file's).\n\n"
                                 "Example: mailer newsletter send voorjaar-2027 --at 2027-03-02T09:00:00+01:00\n\n"
                                 "Example: mailer newsletter send voorjaar-2027 --ab-subject \"Nieuw: twee "
                                 "trainingen\" --ab-share 20 --ab-hours 4")
@click.argument("slug")
@click.option("--at", "start_at", default=None, help="ISO 8601 start time (default: now).")
@click.option("--no-test", "no_test", is_flag=True, help="Send without a test of this content.")
@click.option("--ab-subject", help="Test this subject (B) against the file's (A).")
@click.option("--ab-share", type=int, help="Percent of the audience in the subject test, half each [default: 20].")
@click.option("--ab-hours", type=float, help="Hours the test runs before the winner goes to the rest "
                                             "[default: 4].")
def newsletter_send(slug: str, start_at: str | None, no_test: bool, ab_subject: str | None, ab_share: int | None,
                    ab_hours: float | None) -> None:
    from mailer.operator.campaigns import SubjectTest, schedule

    ab = SubjectTest.from_options(ab_subject, ab_share, ab_hours)
    built = services()
    at = parse_time(None, None, start_at) if start_at else None
    view = schedule(built.db, built.content, slug, now=built.clock.now(), start_at=at, no_test=no_test, ab=ab)
    click.echo(f"campaign {view.id}: newsletter {slug} scheduled for {view.start_at.isoformat()} "
               f"(content {view.content_hash[:12]})"
               + (f"; subject test: {ab.share} % of the audience, winner after {ab.hours:g} h" if ab else ""))


def _campaign_command(name: str, verb: str, help_text: str):
    @newsletter.command(name, help=help_text)
    @click.argument("slug")
    def command(slug: str) -> None:
        from mailer.operator import campaigns

        built = services(check=False)
        view = getattr(campaigns, name)(built.db, slug, now=built.clock.now())
        click.echo(f"campaign {view.id}: newsletter {slug} is {view.status}; {view.changed_rows} waiting mail(s) {verb}")

    return command


_campaign_command("pause", "held", "Stop queueing the newsletter's campaign and hold its waiting mail (mail a "
                  "worker has taken already goes out).\n\nExample: mailer newsletter pause voorjaar-2027")
_campaign_command("resume", "due again", "Go on with a paused campaign: its held mail is due at once and the rest "
                  "of the audience is queued.\n\nExample: mailer newsletter resume voorjaar-2027")
_campaign_command("cancel", "cancelled", "Cancel the newsletter's campaign: nothing more is queued, waiting mail "
                  "is cancelled, sent mail stays sent.\n\nExample: mailer newsletter cancel voorjaar-2027")


@newsletter.command("publish", help="Show a sent newsletter in the public archive (/nieuwsbrief/) from now on, "
                                    "whatever its file says.\n\nExample: mailer newsletter publish voorjaar-2027")
@click.argument("slug")
def newsletter_publish(slug: str) -> None:
    from mailer.operator.archive import publish

    publish(services(check=False).db, slug, True)
    click.echo(f"newsletter {slug} is in the public archive")


@newsletter.command("unpublish", help="Take a sent newsletter out of the public archive and its feed (its page "
                                      "answers 404).\n\nExample: mailer newsletter unpublish voorjaar-2027")
@click.argument("slug")
def newsletter_unpublish(slug: str) -> None:
    from mailer.operator.archive import publish

    publish(services(check=False).db, slug, False)
    click.echo(f"newsletter {slug} is no longer in the public archive")


def _counts(view) -> str:
    return f"queued {view.queued}, sent {view.sent}, failed {view.failed}"


@newsletter.command("status", help="The newsletter's newest campaign in figures: audience, mail queued, sent, "
                                   "deferred, failed (with the server's last reply), cancelled, unique clicks per "
                                   "link, and newsletter unsubscribes after its mail.\n\n"
                                   "Example: mailer newsletter status voorjaar-2027 --json")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (keys: audience, queued, sent, "
                                                      "deferred, failed, clicks, unsubscribes, status, start_at, ...).")
def newsletter_status(slug: str, as_json: bool) -> None:
    from mailer.operator.campaigns import figures

    built = services(check=False)
    view = figures(built.db, slug, zone=built.settings.drip_window.zone)
    if as_json:
        click.echo(json.dumps(view.as_dict(), indent=2, ensure_ascii=False))
        return
    audience_note = "the number queued" if view.audience_from == "queued" else "its frozen filters, counted now"
    click.echo(f"campaign {view.id}: newsletter {view.slug}, {view.status}, start {view.start_at.isoformat()}"
               + (f", finished {view.finished_at.isoformat()}" if view.finished_at else ""))
    for label, value, note in (("audience", view.audience, f"  ({audience_note})"), ("queued", view.queued, ""),
                               ("sent", view.sent, ""), ("waiting", view.waiting, ""),
                               ("deferred", view.deferred, ""), ("failed", view.failed, ""),
                               ("cancelled", view.cancelled, ""), ("unsubscribes", view.unsubscribes, "")):
        click.echo(f"  {label:<14}{value:>8}{note}")
    if view.subject:
        click.echo(f"  subject       {view.subject}")
    if view.ab:
        ab = view.ab
        state = (f"winner {ab.winner}, chosen {ab.decided_at.isoformat()} on {ab.decided_by['A']} against "
                 f"{ab.decided_by['B']} unique clicks" if ab.winner else
                 f"winner chosen at {ab.decide_at.isoformat()}" if ab.decide_at else
                 f"winner chosen {ab.hours:g} h after the test mail begins to go out")
        click.echo(f"  subject test: {ab.share} % of the audience, {state}")
        for name, variant in ab.variants.items():
            click.echo(f"    {name}: queued {variant.queued:>7}, sent {variant.sent:>7}, unique clicks "
                       f"{variant.clicks:>6}  {variant.subject or '(the file’s, frozen at the start)'}")
    click.echo("  clicks (unique leads per link):" + ("" if view.clicks else " none"))
    for link, count in view.clicks.items():
        click.echo(f"    {link:<30}{count:>8}")
    if view.failures:
        click.echo("  failed:")
        for recipient, reply in view.failures:
            click.echo(f"    {recipient}: {reply}")
        if view.failed > len(view.failures):
            click.echo(f"    ... and {view.failed - len(view.failures)} more")


@newsletter.command("list", help="Every campaign, newest start first: slug, status, start, queued/sent/failed.\n\n"
                                 "Example: mailer newsletter list")
def newsletter_list() -> None:
    from mailer.operator.campaigns import all_figures

    built = services(check=False)
    views = all_figures(built.db, zone=built.settings.drip_window.zone)
    if not views:
        click.echo("no campaigns")
    for view in views:
        test = f"  (subject test: winner {view.ab.winner or 'not yet chosen'})" if view.ab else ""
        click.echo(f"{view.slug}  {view.status}  {view.start_at.isoformat()}  {_counts(view)}{test}")
