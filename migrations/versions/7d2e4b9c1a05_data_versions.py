"""data versions: the page caches' versions in the database (PostgreSQL)

Revision ID: 7d2e4b9c1a05
Revises: 1144067fdd4d
Create Date: 2026-12-08 10:00:00.000000

On PostgreSQL the library and data versions that key every process's page caches live in this
one row instead of files in the data folder (app.coordination). SQLite has the table too (one
schema for both) but keeps using its files.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7d2e4b9c1a05'
down_revision = '1144067fdd4d'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        'data_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('library_version', sa.BigInteger(), nullable=False),
        sa.Column('data_version', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_versions')),
    )
    op.bulk_insert(table, [{'id': 1, 'library_version': 0, 'data_version': 0}])


def downgrade():
    op.drop_table('data_versions')
