"""probe a mirror now: requests, and which one each vantage point has served

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10

- probe_requests: at most one row per mirror, moved by each request (probes.requests);
- probe_requests_served: per mirror and vantage point, the request it served and when.

Both start empty.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "probe_requests",
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["mirror_id"], ["mirrors.id"],
                                name=op.f("fk_probe_requests_mirror_id_mirrors"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mirror_id", name=op.f("pk_probe_requests")),
    )
    op.create_table(
        "probe_requests_served",
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("vantage", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("served_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["mirror_id"], ["mirrors.id"],
                                name=op.f("fk_probe_requests_served_mirror_id_mirrors"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mirror_id", "vantage", name=op.f("pk_probe_requests_served")),
    )


def downgrade() -> None:
    op.drop_table("probe_requests_served")
    op.drop_table("probe_requests")
