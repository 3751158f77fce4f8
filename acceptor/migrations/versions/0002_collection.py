"""Collection (DESIGN.md pitfall 8): participants and acknowledgements per transaction,
the collectable flag, and the compact outcome records of collected transactions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("paxos_txn") as batch:
        batch.add_column(sa.Column("participants", sa.Text, nullable=True))
        batch.add_column(sa.Column("acked", sa.Text, nullable=True))
        batch.add_column(sa.Column("collectable", sa.SmallInteger, nullable=False, server_default="0"))
    op.create_index("ix_paxos_txn_collectable", "paxos_txn", ["collectable"])
    op.create_table(
        "paxos_collected",
        sa.Column("txn_id", sa.String(128), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("collected_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_paxos_collected_ms", "paxos_collected", ["collected_ms"])


def downgrade() -> None:
    op.drop_index("ix_paxos_collected_ms", "paxos_collected")
    op.drop_table("paxos_collected")
    op.drop_index("ix_paxos_txn_collectable", "paxos_txn")
    with op.batch_alter_table("paxos_txn") as batch:
        batch.drop_column("collectable")
        batch.drop_column("acked")
        batch.drop_column("participants")
