"""device sort indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 20:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_devices_name_id": ["name", "id"],
    "ix_devices_created_at_id": ["created_at", "id"],
    "ix_devices_updated_at_id": ["updated_at", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
