"""maintenance windows: a mirror planned out of the answers, with its probes paused

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10

- maintenance_windows: per mirror, a start, an end, a reason, who planned it and when, and
  whether (and by whom) it was cancelled. dnsd.maintenance says what a window does.

The table starts empty: no mirror is in maintenance before somebody plans a window.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(), nullable=True),
        sa.Column("cancelled_by", sa.String(length=255), nullable=True),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_maintenance_windows_span")),
        sa.ForeignKeyConstraint(["mirror_id"], ["mirrors.id"],
                                name=op.f("fk_maintenance_windows_mirror_id_mirrors"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_windows")),
    )
    with op.batch_alter_table("maintenance_windows", schema=None) as b:
        b.create_index("ix_maintenance_windows_mirror", ["mirror_id", "ends_at"], unique=False)
        b.create_index("ix_maintenance_windows_ends_at", ["ends_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("maintenance_windows", schema=None) as b:
        b.drop_index("ix_maintenance_windows_ends_at")
        b.drop_index("ix_maintenance_windows_mirror")
    op.drop_table("maintenance_windows")
