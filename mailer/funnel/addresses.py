"""Addresses and names as a visitor types them, cleaned and checked the way we store them.

The messages are Dutch: they are shown to the visitor next to the field.
"""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

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
