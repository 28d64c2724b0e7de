"""The signup and new-link forms: validation and the messages a visitor sees (Dutch)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, StringField
from wtforms.validators import InputRequired, Length, ValidationError

from mailer.funnel.addresses import NAME_EMPTY, NAME_MAX, clean_name, normalise_email


class _Name:
    """Something typed that cleans to nothing (spaces, line breaks, invisible characters) is no name."""

    def __call__(self, form, field):
        if not field.data:
            raise ValidationError(NAME_EMPTY)


class _Email:
    def __call__(self, form, field):
        try:
            field.normalised = normalise_email(field.data or "")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class _NoFormCSRF:
    # CSRFProtect checks the token of every POST before the view runs (and the embedded form
    # is exempt, see web/public.py); a second check inside the form would only repeat it.
    csrf = False


class SignupForm(FlaskForm):
    Meta = _NoFormCSRF

    first_name = StringField(
        "Voornaam",
        filters=[clean_name],
        validators=[InputRequired("Vul je voornaam in."), _Name(), Length(max=NAME_MAX)],
    )
    email = StringField("E-mailadres", validators=[InputRequired("Vul je e-mailadres in."), _Email()])
    marketing = BooleanField()
    # Honeypot: hidden from people (CSS, aria-hidden, no tab stop); bots fill in every field.
    website = StringField("Laat dit veld leeg")
    started = HiddenField()


class NewLinkForm(FlaskForm):
    Meta = _NoFormCSRF

    email = StringField("E-mailadres", validators=[InputRequired("Vul je e-mailadres in."), _Email()])
