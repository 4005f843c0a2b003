"""cht index build: persons list their blocking keys; cht_person_keys one B-tree (SQLite WITHOUT ROWID), no person index

A person's key rows are deleted by their primary key from the list its ``cht_persons`` row keeps
(``block_keys``), so ``ix_cht_person_keys_person`` — a second B-tree every write of a full build updated
at random places — goes. Existing rows get their lists from the key table before the index is dropped.

Revision ID: 0019
Revises: 0018
"""

from alembic import op
import sqlalchemy as sa


revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cht_persons", sa.Column("block_keys", sa.Text(), nullable=False, server_default="[]"))
    sqlite = op.get_bind().dialect.name == "sqlite"
    listed = "json_group_array(k.key)" if sqlite else "json_agg(k.key ORDER BY k.key)::text"
    op.execute(
        f"UPDATE cht_persons SET block_keys = COALESCE((SELECT {listed} FROM cht_person_keys k "
        "WHERE k.person_id = cht_persons.person_id), '[]')"
    )
    op.drop_index("ix_cht_person_keys_person", table_name="cht_person_keys")
    if sqlite:  # a rowid table with a separate primary-key index → one B-tree ordered by the key
        op.execute(
            "CREATE TABLE cht_person_keys_new (key VARCHAR(200) NOT NULL, person_id VARCHAR(128) NOT NULL, "
            "CONSTRAINT pk_cht_person_keys PRIMARY KEY (key, person_id)) WITHOUT ROWID"
        )
        op.execute(
            "INSERT INTO cht_person_keys_new (key, person_id) "
            "SELECT key, person_id FROM cht_person_keys ORDER BY key, person_id"
        )
        op.execute("DROP TABLE cht_person_keys")
        op.execute("ALTER TABLE cht_person_keys_new RENAME TO cht_person_keys")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TABLE cht_person_keys_old (key VARCHAR(200) NOT NULL, person_id VARCHAR(128) NOT NULL, "
            "CONSTRAINT pk_cht_person_keys PRIMARY KEY (key, person_id))"
        )
        op.execute("INSERT INTO cht_person_keys_old (key, person_id) SELECT key, person_id FROM cht_person_keys")
        op.execute("DROP TABLE cht_person_keys")
        op.execute("ALTER TABLE cht_person_keys_old RENAME TO cht_person_keys")
    op.create_index("ix_cht_person_keys_person", "cht_person_keys", ["person_id"])
    with op.batch_alter_table("cht_persons") as batch:
        batch.drop_column("block_keys")
