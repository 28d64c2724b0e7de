"""The signup and new-link forms: validation and the messages a visitor sees (Dutch)."""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, StringField
from wtforms.validators import InputRequired, Length, ValidationError

NAME_MAX = 100


def clean_name(value: str | None) -> str:
    """Drop control and format characters, fold white space; the result is at most NAME_MAX long."""
    if not value:
        return ""
    kept = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C" or ch in " \t")
    return re.sub(r"\s+", " ", kept).strip()[:NAME_MAX]


def normalise_email(value: str) -> str:
    """The address as we store it, or ValueError with a message for the visitor."""
    try:
        # allow_smtputf8=False: relays without SMTPUTF8 cannot carry a non-ASCII local part,
        # so refuse it here; an internationalised domain is kept in its ASCII (IDNA) form.
        result = validate_email(value.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise ValueError("Dit e-mailadres lijkt niet te kloppen. Controleer het even, bijvoorbeeld: naam@gemeente.nl.")
    return result.ascii_email.lower()


class _Email:
    def __call__(self, form, field):
        try:
            field.normalised = normalise_email(field.data or "")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class _NoFormCSRF:
    # CSRFProtect checks the token of every POST before the view runs (and the embedded form
    # is exempt, see views/public.py); a second check inside the form would only repeat it.
    csrf = False


class SignupForm(FlaskForm):
    Meta = _NoFormCSRF

    first_name = StringField(
        "Voornaam",
        filters=[clean_name],
        validators=[InputRequired("Vul je voornaam in."), Length(max=NAME_MAX)],
    )
    email = StringField("E-mailadres", validators=[InputRequired("Vul je e-mailadres in."), _Email()])
    marketing = BooleanField()
    # Honeypot: hidden from people (CSS, aria-hidden, no tab stop); bots fill in every field.
    website = StringField("Laat dit veld leeg")
    started = HiddenField()


class NewLinkForm(FlaskForm):
    Meta = _NoFormCSRF

    email = StringField("E-mailadres", validators=[InputRequired("Vul je e-mailadres in."), _Email()])
