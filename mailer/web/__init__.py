"""The web part: public pages, links from mails, health. create_app() builds it."""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from mailer.services import Services
from mailer.settings import Settings
from mailer.web import admin, common, health, hooks, links, public
from mailer.web.extensions import csrf, limiter


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """The web application: pages and endpoints only. It never sends mail and runs no scheduler,
    and does not load the mail side (templates, rendering, transports): a request only puts
    mail in the outbox. The workers check the mail templates when they start."""
    services = services or Services(settings or Settings.from_env())
    settings = services.settings
    app = Flask(__name__, static_folder=None, template_folder=None)
    app.jinja_loader = services.page_loader()
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
    _register(app)
    return app


def _register(app: Flask) -> None:
    app.register_blueprint(public.bp)
    app.register_blueprint(links.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(hooks.bp)  # /hooks/<provider>: CSRF-exempt, signed by the provider
    admin.init_app(app)  # /beheer/: the operators' dashboard, behind a login
    app.register_error_handler(CSRFError, public.csrf_error)
    app.register_error_handler(HTTPException, common.http_error)
    app.register_error_handler(OperationalError, common.database_unavailable)
    app.register_error_handler(InterfaceError, common.database_unavailable)
    app.register_error_handler(Exception, common.unexpected)

    @app.context_processor
    def _organisation():
        return {"org": common.services().content.organisation}

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # Tokens live in our URLs: never send them to other sites. Same-origin (not no-referrer)
        # because Flask-WTF refuses an HTTPS form post that arrives without a Referer.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if common.in_dashboard():
            return admin.common.security_headers(response)
        if not common.frameable():
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
