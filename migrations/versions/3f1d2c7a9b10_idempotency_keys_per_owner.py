"""idempotency keys per owner: store sha256(owner, key) instead of the client's key

Revision ID: 3f1d2c7a9b10
Revises: 788e3083b0fc
Create Date: 2026-12-02 12:45:00

A key one user had used was a 409 for everyone else (revealing it, and letting keys be squatted).
Keys are now hashed together with their owner (app.jobs.scoped_idempotency_key); the column and
its unique constraint stay, only the stored values change. Downgrading cannot recover the
client's keys, so it clears them (a replay after a downgrade creates a new job).
"""
import hashlib

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3f1d2c7a9b10'
down_revision = '788e3083b0fc'
branch_labels = None
depends_on = None

jobs = sa.table(
    'jobs',
    sa.column('id', sa.Integer),
    sa.column('owner_id', sa.Integer),
    sa.column('idempotency_key', sa.String(128)),
)


def upgrade():
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(jobs.c.id, jobs.c.owner_id, jobs.c.idempotency_key).where(
            jobs.c.idempotency_key.is_not(None)
        )
    ).all()
    for job_id, owner_id, key in rows:
        scoped = hashlib.sha256(f"{owner_id or 0}\n{key}".encode()).hexdigest()
        connection.execute(
            sa.update(jobs).where(jobs.c.id == job_id).values(idempotency_key=scoped)
        )


def downgrade():
    op.get_bind().execute(sa.update(jobs).values(idempotency_key=None))
