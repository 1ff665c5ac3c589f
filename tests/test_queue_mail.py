"""Queueing mail: headers a person's input cannot break, and the row in the caller's transaction."""

import email

import pytest
import sqlalchemy as sa

from dnsd.models import outbox
from dnsd.outbox import queue_mail


def test_line_breaks_in_a_subject_cannot_inject_headers(sqlite_engine):
    with sqlite_engine.begin() as conn:
        queue_mail(conn, kind="test", sender="mirrors@example.org", to=["a@example.org"],
                   subject="de2 disabled: hardware\nmove\r\nBcc: evil@example.com", body="text")
    with sqlite_engine.connect() as conn:
        row = conn.execute(sa.select(outbox)).one()
    msg = email.message_from_bytes(row.message)
    assert msg["Subject"] == "de2 disabled: hardware move Bcc: evil@example.com"
    assert msg["Bcc"] is None
    assert msg["Auto-Submitted"] == "auto-generated"
    assert row.recipients == "a@example.org"


def test_mail_vanishes_with_a_rolled_back_change(sqlite_engine):
    with pytest.raises(RuntimeError):
        with sqlite_engine.begin() as conn:
            queue_mail(conn, kind="test", sender="m@example.org", to=["a@example.org"],
                       subject="s", body="b")
            raise RuntimeError("the change failed")
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0


def test_no_recipient_is_an_error(sqlite_engine):
    with sqlite_engine.begin() as conn, pytest.raises(ValueError):
        queue_mail(conn, kind="test", sender="m@example.org", to=[" "], subject="s", body="b")
