-- Finished imports and deliveries into the event outbox, in the transaction that
-- finishes them (whichever code path does it: a job, a crash recovery, a confirm, its
-- failure). The WHEN clauses are checked without calling the functions, so the
-- progress updates of a running confirm or import pay nothing.
--
-- The live definition. Migration 0012 created it and keeps its own frozen copy; a change
-- is made here and applied by a new migration that runs this file's text. A test checks
-- that a migrated database holds exactly this: tests/services/events/test_sql.py.
CREATE OR REPLACE FUNCTION outbox_import_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (type, data)
    SELECT 'import.finished', jsonb_build_object(
        'import_id', NEW.id::text, 'set_id', NEW.set_id::text, 'set_key', s.key,
        'kind', NEW.kind, 'status', NEW.status, 'filename', NEW.filename,
        'rows_read', NEW.rows_read, 'accepted', NEW.accepted,
        'duplicates', NEW.duplicates, 'rejected', NEW.rejected, 'error', NEW.error)
    FROM coupon_sets s WHERE s.id = NEW.set_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION outbox_delivery_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (type, data)
    SELECT 'delivery.finished', jsonb_build_object(
        'delivery_id', NEW.id::text, 'label', NEW.label, 'set_id', NEW.coupon_set_id::text,
        'set_key', s.key, 'pool', p.name, 'status', NEW.status,
        'recipients', NEW.recipient_count, 'processed', NEW.processed,
        'assigned', NEW.assigned, 'kept', NEW.kept, 'failure_reason', NEW.failure_reason)
    FROM coupon_sets s LEFT JOIN pools p ON p.id = NEW.pool_id
    WHERE s.id = NEW.coupon_set_id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS import_finished ON import_jobs;

CREATE TRIGGER import_finished AFTER UPDATE OF status ON import_jobs
FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION outbox_import_finished();

DROP TRIGGER IF EXISTS delivery_finished ON deliveries;

CREATE TRIGGER delivery_finished AFTER UPDATE OF status ON deliveries
FOR EACH ROW WHEN (NEW.status IN ('finished', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION outbox_delivery_finished();
