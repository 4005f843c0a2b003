"""events numbered by the database at commit: a subscription's counter row is locked for the commit only

A notification event is queued as an outbox row of kind ``event``, status ``unnumbered``; the database
makes it ``pending`` and gives it the subscription's next number, its ``event:<sub>:<n>`` key, the number in its payload and its
``subscription_events`` row. PostgreSQL: a deferred constraint trigger, run inside COMMIT, so the
counter row is locked from there to the end of the commit, not while the request's last statements
come and go (concurrent requests of one facility waited on each other there). The first firing in a
transaction numbers all its waiting events, per subscription in subscription order (no deadlock
between two committers), and gives them new outbox ids from the sequence: ids then follow the numbers,
and the outbox delivers a key's rows in id order. SQLite: a plain trigger at insert (one writer at a
time: the insert order is the commit order).

Revision ID: 0015
Revises: 0019
"""

from alembic import op


revision = "0015"
down_revision = "0019"
branch_labels = None
depends_on = None

_WAITING = "status = 'unnumbered'"

_PG_FUNCTION = f"""
CREATE FUNCTION ltfu_number_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s record;
    last bigint;
BEGIN
    -- numbered already by an earlier firing of this commit (its id has changed)
    PERFORM 1 FROM outbox WHERE id = NEW.id AND {_WAITING};
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    FOR s IN SELECT subscription_id, count(*) AS k FROM outbox WHERE {_WAITING}
             GROUP BY subscription_id ORDER BY subscription_id LOOP
        UPDATE subscription_counters SET events_since_start = events_since_start + s.k
         WHERE subscription_id = s.subscription_id RETURNING events_since_start INTO last;
        IF NOT FOUND THEN  -- the subscription is gone: nobody to tell
            DELETE FROM outbox WHERE {_WAITING} AND subscription_id = s.subscription_id;
            CONTINUE;
        END IF;
        WITH waiting AS (  -- in the order they were queued
            SELECT id, row_number() OVER (ORDER BY id) AS rn FROM outbox
             WHERE {_WAITING} AND subscription_id = s.subscription_id
        ), fresh AS (  -- as many new ids, in their order: ids follow the numbers
            SELECT v, row_number() OVER (ORDER BY v) AS rn
              FROM (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS v FROM generate_series(1, s.k)) AS taken
        ), numbered AS (
            UPDATE outbox o SET id = f.v, status = 'pending',
                   dedupe_key = 'event:' || s.subscription_id || ':' || (last - s.k + w.rn),
                   payload = '{{"event":' || (last - s.k + w.rn) || ',' || substr(o.payload, 2)
              FROM waiting w JOIN fresh f USING (rn) WHERE o.id = w.id
            RETURNING o.id, o.payload::jsonb AS p, o.case_id, last - s.k + w.rn AS n
        )
        INSERT INTO subscription_events (subscription_id, event_number, focus, case_id, created_at, outbox_id)
        SELECT s.subscription_id, n, p ->> 'focus', case_id, p ->> 'timestamp', id FROM numbered;
    END LOOP;
    RETURN NULL;
END
$$
"""

_SQLITE_NUMBER = """
CREATE TRIGGER outbox_number_events AFTER INSERT ON outbox
WHEN NEW.status = 'unnumbered'
BEGIN
    DELETE FROM outbox WHERE id = NEW.id AND NOT EXISTS (  -- the subscription is gone: nobody to tell
        SELECT 1 FROM subscription_counters WHERE subscription_id = NEW.subscription_id);
    UPDATE subscription_counters SET events_since_start = events_since_start + 1
     WHERE subscription_id = NEW.subscription_id;
    UPDATE outbox SET
        status = 'pending',
        dedupe_key = 'event:' || NEW.subscription_id || ':' || (
            SELECT events_since_start FROM subscription_counters WHERE subscription_id = NEW.subscription_id),
        payload = '{"event":' || (
            SELECT events_since_start FROM subscription_counters WHERE subscription_id = NEW.subscription_id)
            || ',' || substr(NEW.payload, 2)
     WHERE id = NEW.id;
    INSERT INTO subscription_events (subscription_id, event_number, focus, case_id, created_at, outbox_id)
    SELECT NEW.subscription_id, events_since_start, json_extract(NEW.payload, '$.focus'), NEW.case_id,
           json_extract(NEW.payload, '$.timestamp'), NEW.id
      FROM subscription_counters WHERE subscription_id = NEW.subscription_id;
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_outbox_events_waiting ON outbox (subscription_id, id) WHERE {_WAITING}")
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE CONSTRAINT TRIGGER outbox_number_events AFTER INSERT ON outbox "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "WHEN (NEW.status = 'unnumbered') EXECUTE FUNCTION ltfu_number_events()"
        )
    else:
        op.execute(_SQLITE_NUMBER)


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER outbox_number_events" + (" ON outbox" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION ltfu_number_events()")
        op.execute("DROP INDEX ix_outbox_events_waiting")
