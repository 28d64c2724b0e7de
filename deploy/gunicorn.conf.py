# gunicorn settings for the web part of mailer (the scaled shape).
#
# Installed as /etc/mailer/gunicorn.conf.py and used by mailer-web.service:
#     gunicorn -c /etc/mailer/gunicorn.conf.py mailer.wsgi:app
# The web part never sends mail and runs no scheduler; `mailer worker` does that.
# Settings gunicorn does not know (an older release) are ignored, not an error.

import os

# Only nginx on this host talks to gunicorn; nothing else should reach it.
bind = "127.0.0.1:8000"

# Sync workers: every request is short (a page, a form post, one database transaction, a PDF),
# and nginx buffers slow clients in both directions, so a worker is never held by a slow
# connection. The classic 2 x CPUs + 1 keeps the CPUs busy while some workers wait on
# PostgreSQL or Redis. Each worker has its own SQLAlchemy connection pool: keep
# workers x pool size (plus the `mailer worker` processes) under PostgreSQL's max_connections.
# Override without editing this file: WEB_CONCURRENCY=N in /etc/mailer/mailer.env.
worker_class = "sync"
_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * _cpus + 1)

# A request that takes longer than this is stuck (the app answers 503 quickly when the
# database is unavailable); the master kills and replaces that worker.
timeout = 30
# On SIGTERM (systemctl stop/restart) or HUP (reload) workers get this long to finish the
# request they are serving. mailer-web.service waits TimeoutStopSec=45 before it kills.
graceful_timeout = 30
# nginx speaks HTTP/1.0 to the upstream without keep-alive; sync workers do not keep
# connections open anyway.
keepalive = 2

# Recycle a worker now and then, so slow growth of memory never adds up; the jitter stops all
# workers from restarting at the same moment.
max_requests = 2000
max_requests_jitter = 200

# The app is imported in each worker, not in the master: `systemctl reload mailer-web`
# (SIGHUP) starts new workers with the newly installed code and retires the old ones without
# dropping a request, and no database or Redis connection is created before the fork.
preload_app = False

# nginx on this host sets X-Forwarded-Proto; gunicorn trusts it only from these addresses.
# The client address (X-Forwarded-For) is handled by the app itself: MAILER_PROXY_COUNT=1
# (one proxy in front) makes it trust exactly the entry that nginx appended.
forwarded_allow_ips = "127.0.0.1,::1"

# Logs go to stdout/stderr and so to the journal: journalctl -u mailer-web.
# Note that URLs in the access log contain tokens (/bevestig/..., /download/...,
# /afmelden/...); whoever can read the journal can use them. nginx logs the same
# requests; set accesslog = None to keep only nginx's log.
accesslog = "-"
errorlog = "-"
loglevel = "info"
# %(h)s is the client address as the app sees it: the app's ProxyFix (MAILER_PROXY_COUNT=1)
# replaces nginx's 127.0.0.1 with the address nginx put in X-Forwarded-For.
# The time stamp comes from the journal; %(M)s is the request time in milliseconds.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# gunicorn >= 25.1 opens a control socket for `gunicornc` in $HOME by default; systemctl
# (stop, restart, reload) is all we use, so do not create one.
control_socket_disable = True

# Names the processes in ps/top ("gunicorn: master [mailer-web]") when the setproctitle
# package is installed in the venv; harmless without it.
proc_name = "mailer-web"
