"""The mailer with parts switched off, for `bench/form_posts.py --layers`: where a post's time goes.

BENCH_SWITCH_OFF is a comma-separated list of: database (the signup stores nothing),
limiter (no rate limit check), csrf (no CSRF check). Everything else is the real app.
"""

import os

from mailer.web.extensions import limiter
from mailer.wsgi import app

switched_off = set(filter(None, os.environ.get("BENCH_SWITCH_OFF", "").split(",")))
if "database" in switched_off:
    app.extensions["mailer"].funnel.subscribe = lambda *args, **kwargs: None
if "limiter" in switched_off:
    limiter.enabled = False
if "csrf" in switched_off:
    app.config["WTF_CSRF_ENABLED"] = False
