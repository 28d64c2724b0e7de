"""mailer: a self-hosted lead-magnet and newsletter mailer. The web app: mailer.web.create_app."""
