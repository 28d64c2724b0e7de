"""Addresses and names as a visitor types them, cleaned and checked the way we store them.

The messages are Dutch: they are shown to the visitor next to the field.
"""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

NAME_MAX = 100
NAME_EMPTY = "Je voornaam bestaat nu alleen uit spaties of onzichtbare tekens. Vul je voornaam in."
ADDRESS_WRONG = "Dit e-mailadres lijkt niet te kloppen. Controleer het even, bijvoorbeeld: naam@gemeente.nl."
ADDRESS_UNSUPPORTED = ("Adressen met letters als é of ü vóór de @ kunnen we helaas nog niet verwerken. "
                       "Gebruik een ander e-mailadres, bijvoorbeeld zonder accenten.")


def clean_name(value: str | None) -> str:
    """Control characters (line breaks, tabs, NUL) become a space, other invisible ones (format,
    private use, unassigned) go; white space is folded; at most NAME_MAX long. So
    'Jan\\r\\nBcc: x' becomes 'Jan Bcc: x', and a name of only such characters becomes ''
    (the form refuses that; an import keeps the name empty)."""
    if not value:
        return ""
    kept = []
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc":
            kept.append(" ")
        elif category[0] != "C":
            kept.append(ch)
    return re.sub(r"\s+", " ", "".join(kept)).strip()[:NAME_MAX]


def normalise_email(value: str) -> str:
    """The address as we store it, or ValueError with a message for the visitor."""
    try:
        # allow_smtputf8=False: relays without SMTPUTF8 cannot carry a non-ASCII local part,
        # so refuse it here; an internationalised domain is kept in its ASCII (IDNA) form.
        result = validate_email(value.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise ValueError(ADDRESS_UNSUPPORTED if _needs_smtputf8(value.strip()) else ADDRESS_WRONG) from None
    return result.ascii_email.lower()


def _needs_smtputf8(value: str) -> bool:
    """A well-formed address that only an SMTPUTF8 relay could carry (jörg@example.nl)."""
    if value.rpartition("@")[0].isascii():
        return False
    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return False
    return True
