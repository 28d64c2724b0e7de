"""Flask extensions, created once and bound to an app in create_app()."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf import CSRFProtect

csrf = CSRFProtect()
# Storage comes from MAILER_RATELIMIT_STORAGE_URL: memory:// in one process, redis:// shared by many.
limiter = Limiter(key_func=get_remote_address)
