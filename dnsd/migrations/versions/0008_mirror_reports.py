"""reports from downloaders: the reports, the day's key of the visitor hash, the mail marker

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10

- mirror_reports: one row per visitor (a keyed hash of their network), mirror and day;
- report_keys: the key of each day's visitor hash (deleted the day after);
- report_mails: per mirror, when its maintainers were last mailed about reports.

All start empty.
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirror_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["mirror_id"], ["mirrors.id"],
                                name=op.f("fk_mirror_reports_mirror_id_mirrors"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_reports")),
        sa.UniqueConstraint("mirror_id", "visitor", name="uq_mirror_reports_visitor"),
    )
    with op.batch_alter_table("mirror_reports", schema=None) as b:
        b.create_index("ix_mirror_reports_mirror_time", ["mirror_id", "created_at"],
                       unique=False)
        b.create_index("ix_mirror_reports_created_at", ["created_at"], unique=False)
    op.create_table(
        "report_keys",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_report_keys")),
    )
    op.create_table(
        "report_mails",
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("mailed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["mirror_id"], ["mirrors.id"],
                                name=op.f("fk_report_mails_mirror_id_mirrors"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mirror_id", name=op.f("pk_report_mails")),
    )


def downgrade() -> None:
    op.drop_table("report_mails")
    op.drop_table("report_keys")
    with op.batch_alter_table("mirror_reports", schema=None) as b:
        b.drop_index("ix_mirror_reports_created_at")
        b.drop_index("ix_mirror_reports_mirror_time")
    op.drop_table("mirror_reports")
