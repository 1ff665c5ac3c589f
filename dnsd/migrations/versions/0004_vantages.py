"""verdicts by agreement: each vantage point's own view of every mirror, and the vantages

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

- vantage_health: per mirror and vantage point, the counters and the last observation of that
  vantage (mirror_health keeps what a quorum of the vantages agrees on);
- vantages: per vantage point, its cycle in progress, its last complete cycle and whether it was
  broken (too few mirrors passed from it).

Both start empty: the counters so far (in mirror_health) stay as they are, and each vantage starts
its own from its next probe.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vantage_health",
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("vantage", sa.String(length=64), nullable=False),
        sa.Column("failures_in_row", sa.Integer(), nullable=False),
        sa.Column("passes_in_row", sa.Integer(), nullable=False),
        sa.Column("last_probe_at", sa.DateTime(), nullable=True),
        sa.Column("last_ok_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_sync_at", sa.DateTime(), nullable=True),
        sa.Column("ipv4_up", sa.Boolean(), nullable=True),
        sa.Column("ipv6_up", sa.Boolean(), nullable=True),
        sa.Column("https_ok", sa.Boolean(), nullable=True),
        sa.Column("geo_check", sa.Text(), nullable=False),
        sa.Column("probed_ipv4", sa.String(length=15), nullable=True),
        sa.Column("probed_ipv6", sa.String(length=45), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["mirror_id"], ["mirrors.id"],
                                name=op.f("fk_vantage_health_mirror_id_mirrors"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mirror_id", "vantage", name=op.f("pk_vantage_health")),
    )
    with op.batch_alter_table("vantage_health", schema=None) as b:
        b.create_index("ix_vantage_health_vantage", ["vantage"], unique=False)
    op.create_table(
        "vantages",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cycle_started_at", sa.DateTime(), nullable=True),
        sa.Column("cycle_passed", sa.Integer(), nullable=False),
        sa.Column("cycle_total", sa.Integer(), nullable=False),
        sa.Column("last_cycle_at", sa.DateTime(), nullable=True),
        sa.Column("last_passed", sa.Integer(), nullable=False),
        sa.Column("last_total", sa.Integer(), nullable=False),
        sa.Column("broken_since", sa.DateTime(), nullable=True),
        sa.Column("broken_mailed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_vantages")),
    )


def downgrade() -> None:
    op.drop_table("vantages")
    with op.batch_alter_table("vantage_health", schema=None) as b:
        b.drop_index("ix_vantage_health_vantage")
    op.drop_table("vantage_health")
