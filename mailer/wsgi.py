"""The web part alone, for the scaled shape: gunicorn 'mailer.wsgi:app'.

No scheduler and no sender run here; `mailer worker` processes deliver the mail.
"""

import sys

from mailer.errors import MailerError
from mailer.web import create_app

try:
    app = create_app()
except MailerError as exc:
    sys.stderr.write(f"mailer: {exc}\n")
    raise SystemExit(1) from None
