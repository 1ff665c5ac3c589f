"""The errors a person sees: one sentence they can act on, never a traceback.

`Refused` is any input or operation the system says no to; `Invalid` names the field that was
wrong (a form shows the message beside it); `NotFound` is a reference to nothing. The CLI prints
them on one line, the web shows them by the field, the API answers 400/404/409 with them.
"""

from __future__ import annotations


class Refused(Exception):
    """An input or operation refused, worded for the person who asked for it."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(Refused):
    """A field value that breaks a rule of dnsd.validation; `field` says which field."""

    def __init__(self, field: str, message: str):
        super().__init__(message, field)


class NotFound(Refused):
    """A mirror, user, application or mail that is not in the table."""


def sentence(msg: str) -> str:
    """A rule's message ("the note is empty") as a sentence a page shows by its field."""
    return msg[:1].upper() + msg[1:] + ("" if msg.endswith((".", "?", "!")) else ".")
