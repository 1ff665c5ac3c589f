"""admin: the web admin, public pages, closer, mirrorctl, the mail outbox and scheduled reports."""
