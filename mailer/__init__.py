"""mailer: a self-hosted lead-magnet and newsletter mailer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from .services import Services
    from .settings import Settings


def create_app(settings: "Settings | None" = None, services: "Services | None" = None) -> "Flask":
    """The web application: pages and endpoints only. It never sends mail and runs no scheduler."""
    # Imported here, not at the top: a command-line tool imports the package without them.
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from . import views
    from .extensions import csrf, limiter
    from .services import TEMPLATES, build_services

    services = services or build_services(settings)
    settings = services.settings
    app = Flask(__name__, template_folder=str(TEMPLATES / "pages"), static_folder=None)
    app.config.update(
        SECRET_KEY=settings.secret_keys[0],
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.is_https,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session cookie; an old tab still works
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_url,
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if settings.proxy_count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_count, x_proto=settings.proxy_count)
    app.extensions["mailer"] = services
    csrf.init_app(app)
    limiter.init_app(app)
    views.register(app)
    return app
