"""Initial acceptor schema: transactions, instances, acceptor identity.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acceptor_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "paxos_txn",
        sa.Column("txn_id", sa.String(128), primary_key=True),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index("ix_paxos_txn_outcome_seen", "paxos_txn", ["outcome", "first_seen_ms"])
    op.create_table(
        "paxos_instance",
        sa.Column("txn_id", sa.String(128), primary_key=True),
        sa.Column("instance", sa.String(128), primary_key=True),
        sa.Column("mbal_round", sa.BigInteger, nullable=False),
        sa.Column("mbal_leader", sa.String(128), nullable=False),
        sa.Column("bal_round", sa.BigInteger, nullable=False),
        sa.Column("bal_leader", sa.String(128), nullable=False),
        sa.Column("val", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("paxos_instance")
    op.drop_index("ix_paxos_txn_outcome_seen", "paxos_txn")
    op.drop_table("paxos_txn")
    op.drop_table("acceptor_meta")
