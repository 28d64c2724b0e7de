"""The baseline for bench/form_posts.py: the least a Flask form post on SQLite can do.

One route pair at the same paths as the mailer (GET and POST ``/gids/<slug>``). The GET shows
a tiny form with the same hidden ``csrf_token`` and ``started`` inputs (fixed values, never
checked) so the benchmark's load generator treats both apps the same. The POST checks one
field, the e-mail address (a simple regex), inserts one row with the plain ``sqlite3`` module
and answers 303 to a thank-you URL, as the mailer does.

The database is the file named by ``BENCH_BARE_DB``: WAL mode, a 5 s busy timeout and
``synchronous=NORMAL`` (the mailer's own pragmas), one connection per worker process, opened
lazily after gunicorn forks. Run it the way the benchmark does:

    BENCH_BARE_DB=/tmp/bare.db gunicorn -w 2 -b 127.0.0.1:8001 'bench.bare_app:app'
"""

from __future__ import annotations

import os
import re
import sqlite3
import time

from flask import Flask, abort, redirect, request

DB_PATH = os.environ.get("BENCH_BARE_DB", "bare.db")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
FORM = """<!doctype html><html lang="nl"><head><meta charset="utf-8"><title>bare</title></head><body>
<form method="post" action="/gids/{slug}">
<input id="csrf_token" name="csrf_token" type="hidden" value="bare-csrf-token">
<input id="started" name="started" type="hidden" value="bare-started">
<input type="text" name="first_name"> <input type="email" name="email">
<button type="submit">Verstuur</button></form></body></html>
"""

_conn: sqlite3.Connection | None = None
_conn_pid: int | None = None


def _connect() -> sqlite3.Connection:
    conn = sqlite3.connect(DB_PATH, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS signups ("
        " id INTEGER PRIMARY KEY, email TEXT NOT NULL, first_name TEXT, created_at REAL NOT NULL)"
    )
    return conn


def db() -> sqlite3.Connection:
    """This process's connection (a forked worker never reuses its parent's)."""
    global _conn, _conn_pid
    if _conn is None or _conn_pid != os.getpid():
        _conn, _conn_pid = _connect(), os.getpid()
    return _conn


app = Flask(__name__)


@app.get("/gids/<slug>")
def form(slug: str):
    return FORM.format(slug=slug)


@app.post("/gids/<slug>")
def submit(slug: str):
    email = (request.form.get("email") or "").strip().lower()
    if not EMAIL.match(email):
        abort(400)
    db().execute(
        "INSERT INTO signups (email, first_name, created_at) VALUES (?, ?, ?)",
        (email, (request.form.get("first_name") or "")[:100], time.time()),
    )
    return redirect(f"/gids/{slug}/bedankt", code=303)


_connect().close()  # create the table (and the WAL file) once, at import
