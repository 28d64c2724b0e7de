"""Signing up does not load the mail side: a fresh process that builds the web app from its
settings and takes a signup has queued the mail without importing the sender, the transports,
the rendering (and so Jinja's mail templates and css-inline), the composer or the scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from mailer.store.migrate import upgrade

MAIL_SIDE = ("mailer.delivery.sender", "mailer.delivery.transports", "mailer.delivery.rendering",
             "mailer.delivery.composer", "apscheduler")

SIGNUP = textwrap.dedent("""
    import json, re, sys

    from sqlalchemy import create_engine, text

    from mailer.web import create_app

    app = create_app()  # settings from the MAILER_* environment
    app.config["TESTING"] = True
    client = app.test_client()
    page = client.get("/gids/mini-guide")
    tokens = dict(re.findall(r'name="(csrf_token|started)" type="hidden" value="([^"]+)"', page.get_data(as_text=True)))
    response = client.post("/gids/mini-guide", data={**tokens, "first_name": "Anne", "email": "anne@gemeente.nl"})
    engine = create_engine(sys.argv[1])
    with engine.connect() as connection:
        queued = connection.execute(text("SELECT kind, recipient, status FROM outbox")).all()
    print(json.dumps({
        "form": page.status_code,
        "status": response.status_code,
        "location": response.headers.get("Location"),
        "outbox": [list(row) for row in queued],
        "loaded": [name for name in sys.argv[2:] if name in sys.modules],
    }))
""")


def test_a_signup_queues_its_mail_without_loading_the_sender_transports_or_rendering(tmp_path):
    url = f"sqlite:///{tmp_path / 'instance' / 'mailer.db'}"
    upgrade(url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILER_")}
    env.update({
        "MAILER_INSTANCE_PATH": str(tmp_path / "instance"),
        "MAILER_DATABASE_URL": url,
        "MAILER_SECRET_KEY": "test-secret-key-0123456789",
        "MAILER_BASE_URL": "https://guide.example.nl",
        "MAILER_MAIL_URL": "memory:",
        "MAILER_FORM_MIN_SECONDS": "0",
    })
    done = subprocess.run([sys.executable, "-c", SIGNUP, url, *MAIL_SIDE], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["form"] == 200
    assert result["status"] == 303 and result["location"].endswith("/gids/mini-guide/bedankt")
    assert result["outbox"] == [["confirm", "anne@gemeente.nl", "queued"]]
    assert result["loaded"] == []
