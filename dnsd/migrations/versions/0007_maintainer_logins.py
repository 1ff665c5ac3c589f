"""maintainer logins by mailed link: the links, maintainer sessions, longer actor columns

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

- login_links: one row per link mailed to a maintainer's address; only the sha256 of the token
  is kept, with the address, its expiry and when it was used (a link works once);
- sessions.maintainer_email: a session belongs to a user (user_id) or to a maintainer's address,
  never both (user_id becomes nullable; a check says exactly one is set). Existing sessions are
  users' and stay valid;
- audit.actor and outbox.author: 255 characters (an address may be 254 long, and a maintainer
  acts under their address).
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_login_links_token_hash")),
    )
    with op.batch_alter_table("login_links", schema=None) as b:
        b.create_index("ix_login_links_email", ["email"], unique=False)
    with op.batch_alter_table("sessions", schema=None) as b:
        b.add_column(sa.Column("maintainer_email", sa.String(length=254), nullable=True))
        b.alter_column("user_id", existing_type=sa.Integer(), nullable=True)
        b.create_check_constraint(
            "owner", "(user_id IS NULL) <> (maintainer_email IS NULL)")
    with op.batch_alter_table("audit", schema=None) as b:
        b.alter_column("actor", existing_type=sa.String(length=64), type_=sa.String(length=255),
                       existing_nullable=False)
    with op.batch_alter_table("outbox", schema=None) as b:
        b.alter_column("author", existing_type=sa.String(length=64), type_=sa.String(length=255),
                       existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as b:
        b.alter_column("author", existing_type=sa.String(length=255), type_=sa.String(length=64),
                       existing_nullable=False)
    with op.batch_alter_table("audit", schema=None) as b:
        b.alter_column("actor", existing_type=sa.String(length=255), type_=sa.String(length=64),
                       existing_nullable=False)
    op.execute("DELETE FROM sessions WHERE user_id IS NULL")
    with op.batch_alter_table("sessions", schema=None) as b:
        b.drop_constraint("owner", type_="check")
        b.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
        b.drop_column("maintainer_email")
    with op.batch_alter_table("login_links", schema=None) as b:
        b.drop_index("ix_login_links_email")
    op.drop_table("login_links")
