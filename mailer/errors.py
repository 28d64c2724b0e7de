"""The small error hierarchy: each error carries what an operator needs to act."""


class MailerError(Exception):
    """Base class for every error mailer raises on purpose."""


class SettingsError(MailerError):
    """A setting is missing or malformed; the message names the variable."""


class ContentError(MailerError):
    """A content file (lead magnet, organisation, notice) is invalid; the message names file and field."""


class InvalidRequest(MailerError):
    """An operator asked for something that does not exist or cannot be (a step, a magnet, a
    field, an address); `option` names what was wrong, so a face can point at it."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class Refused(MailerError):
    """The operator layer said no for a reason a face may word itself: `code` names the reason
    (stable: the dashboard says it in Dutch by it); the message is the command line's English."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class RefusedRequest(InvalidRequest):
    """As Refused, for a request whose `option` the command line points at."""

    def __init__(self, message: str, option: str | None, code: str):
        super().__init__(message, option)
        self.code = code


class UnknownLead(MailerError):
    """No lead has this address (an operator named someone who is not, or no longer, there)."""

    def __init__(self, email: str):
        super().__init__(f"no lead with the address {email}")
        self.email = email


class InvalidLink(MailerError):
    """A signed link is expired, tampered with, or meant for something else."""

    def __init__(self, reason: str, magnet: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.magnet = magnet


class DeliveryError(MailerError):
    """A transport could not hand one message over.

    ``code`` is the SMTP reply code when the server answered (None for a broken
    connection or timeout); ``text`` is the server's text or the exception.
    ``unknown`` is True when the connection broke after the message data was sent and
    before the server's answer: the message may or may not have been accepted.
    """

    def __init__(self, code: int | None, text: str, unknown: bool = False):
        super().__init__(f"{code or 'no reply'}: {text}")
        self.code = code
        self.text = text
        self.unknown = unknown
