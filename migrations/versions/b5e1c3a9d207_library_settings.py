"""library settings: where the library's objects live after `storage migrate`

Revision ID: b5e1c3a9d207
Revises: 7d2e4b9c1a05
Create Date: 2026-12-06 16:00:00.000000

A small key/value table. Its row `storage_url` records where `flask atelier storage migrate`
moved the library's objects; every instance compares it with its ATELIER_STORAGE_URL (app
start-up, and before an image row commits). No row: never migrated, today's behaviour.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b5e1c3a9d207'
down_revision = '7d2e4b9c1a05'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'library_settings',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Text(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_library_settings')),
    )


def downgrade():
    op.drop_table('library_settings')
