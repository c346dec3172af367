"""jobs: an index for the recent finished jobs of one provider and model

Revision ID: e4a7c2d9b613
Revises: b5e1c3a9d207
Create Date: 2026-12-06 19:00:00.000000

The cards' expected finish (app.views.polling) reads the last 20 succeeded jobs of a provider and
model. Without this index that walked the jobs table newest first until it had 20, so a model
with little history read every row (100,000 jobs: about 0.1 s per read, issue #18).
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'e4a7c2d9b613'
down_revision = 'b5e1c3a9d207'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(
            'ix_jobs_provider_model_status_id', ['provider', 'model', 'status', 'id'], unique=False
        )


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_provider_model_status_id')
