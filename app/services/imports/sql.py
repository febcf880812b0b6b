"""Every SQL statement of the import engine, asyncpg ``$n``, each with why it is safe.

They run on plain connections of the driver pool (app/db.py): the job's own connection,
which holds the job's session lock (app/locks.py) and the staging table, or a short one
for progress, recovery and reports."""

# --------------------------------------------------------------------------- the job row

# Committed at once (the connection is in autocommit), so the history shows the job and
# its progress while the upload streams.
INSERT_JOB = """
INSERT INTO import_jobs (id, set_id, kind, status, format, mode, filename, options,
                         api_key_id, idempotency_key, started_at)
VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9, now())
"""

# The job as the API shows it (primary key).
JOB = "SELECT * FROM import_jobs WHERE id = $1"

# rows_read while the COPY runs, from another connection: one row by its primary key, so
# it never waits for more than the job's own commit.
PROGRESS = "UPDATE import_jobs SET rows_read = $2, updated_at = now() WHERE id = $1"

# The checksum once the file is read, so a re-sent file finds this job.
RECORD_CHECKSUM = """
UPDATE import_jobs SET checksum = $2, rows_read = $3, updated_at = now() WHERE id = $1
"""

# Other jobs that brought this content into the set, oldest first; failed ones never
# count. Run under the advisory lock on (set, kind, checksum), held to the commit, so two
# uploads of one file cannot both miss each other (ix_import_jobs_set_id_checksum).
EARLIER_JOBS = """
SELECT id, status FROM import_jobs
WHERE set_id = $1 AND kind = $2 AND checksum = $3 AND id <> $4 AND status <> 'failed'
ORDER BY created_at
"""

# A job that found an earlier one of the same content gives way to it: no trace is kept.
DELETE_JOB = "DELETE FROM import_jobs WHERE id = $1"

# The job failed; nothing of the file was kept (its transaction rolled back).
FAIL_JOB = """
UPDATE import_jobs SET status = 'failed', error = $2, rows_read = $3,
    finished_at = now(), updated_at = now()
WHERE id = $1
"""

# Jobs that may have lost their process; each is then tried against its session lock.
UNFINISHED_JOBS = "SELECT id FROM import_jobs WHERE status IN ('queued', 'running')"

# A job whose lock is free has no process any more; the status check makes a job that
# finished meanwhile stay as it is.
MARK_INTERRUPTED = """
UPDATE import_jobs SET status = 'failed', error = $2, finished_at = now(), updated_at = now()
WHERE id = $1 AND status IN ('queued', 'running')
"""

# The job an Idempotency-Key started (ix_import_jobs_api_key_id_idempotency_key); keys
# are kept 24 hours, as for every other write.
KEYED_JOB = """
SELECT id FROM import_jobs
WHERE api_key_id = $1 AND idempotency_key = $2 AND set_id = $3 AND kind = $4
  AND created_at > now() - interval '24 hours'
ORDER BY created_at DESC LIMIT 1
"""

# The end of a job, in the transaction that brought its rows in: status, counts and the
# first errors (ix_import_errors_job_id_id), so a crash keeps neither the rows nor this.
FINISH_JOB = """
UPDATE import_jobs SET
    status = $2, error = $3, rows_read = $4, accepted = $5, duplicates = $6, rejected = $7,
    errors = COALESCE((
        SELECT jsonb_agg(jsonb_build_object('line', line, 'code', code, 'reason', reason)
                         ORDER BY id)
        FROM (SELECT * FROM import_errors WHERE job_id = $1 ORDER BY id LIMIT $8) first
    ), '[]'::jsonb),
    finished_at = now(), updated_at = now()
WHERE id = $1
"""

# One audit row per job, in the same transaction as its rows.
AUDIT = """
INSERT INTO audit_events (set_id, action, api_key_id, idempotency_key, details)
VALUES ($1, $2, $3, $4, $5)
"""

# The set's pools, to map the file's pool cells (by name or id) to ids.
POOLS = "SELECT id, name FROM pools WHERE set_id = $1"

# --------------------------------------------------------------------------- staging

STAGING = "import_staging"

# A temporary table of the job's connection: no other session sees it, and it goes with
# the connection if the process dies. Its first columns are rows.Record's, in its order.
CREATE_STAGING = """
DROP TABLE IF EXISTS import_staging;
CREATE TEMP TABLE import_staging (
    n bigint, line bigint, code text, lookup text, pool_id uuid, metadata jsonb,
    reason text, dup_line bigint, in_set boolean NOT NULL DEFAULT false
)
"""

# Before the connection goes back to the pool (the next job creates its own).
DROP_STAGING = "DROP TABLE IF EXISTS import_staging"

# Memory of this backend for the hash of 1M lookups, instead of spilling to disk.
MERGE_WORK_MEM = "SET LOCAL work_mem = '128MB'"

# Marks every repeat of a lookup after its first occurrence (file order).
MARK_REPEATS = """
UPDATE import_staging s SET dup_line = f.first_line
FROM (
    SELECT lookup, min(n) AS first_n, min(line) AS first_line
    FROM import_staging WHERE reason IS NULL
    GROUP BY lookup HAVING count(*) > 1
) f
WHERE s.reason IS NULL AND s.lookup = f.lookup AND s.n > f.first_n
"""

# Whether MARK_IN_SET is worth running (ix_codes_set_id_id): a new set has no codes.
SET_HAS_CODES = "SELECT EXISTS (SELECT 1 FROM codes WHERE set_id = $1)"

# Marks codes the set holds already (uq_codes_set_id_lookup). A race with a concurrent
# writer is still settled by ON CONFLICT in INSERT_CODES (only the report may miss it).
MARK_IN_SET = """
UPDATE import_staging s SET in_set = true
FROM codes c
WHERE c.set_id = $1 AND c.lookup = s.lookup AND s.reason IS NULL AND s.dup_line IS NULL
"""

# What the merge will try to insert, and what it refuses.
STAGED_COUNTS = """
SELECT count(*) FILTER (WHERE reason IS NOT NULL) AS rejected,
       count(*) FILTER (WHERE reason IS NULL AND dup_line IS NULL AND NOT in_set) AS candidates
FROM import_staging
"""

# One set-based insert. Repeats are marked already (the first occurrence wins), so no
# sort is needed: the staging table is read in the order it was written. The unique
# index (set_id, lookup) skips whatever a concurrent writer added meanwhile, so the count
# of inserted rows is exact.
INSERT_CODES = """
WITH inserted AS (
    INSERT INTO codes (set_id, pool_id, code, lookup, metadata)
    SELECT $1, pool_id, code, lookup, metadata FROM import_staging
    WHERE reason IS NULL AND dup_line IS NULL AND NOT in_set
    ON CONFLICT (set_id, lookup) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

# The report of the staged rows, in file order, in the merge's transaction.
REPORT_STAGED = """
INSERT INTO import_errors (job_id, line, code, reason)
SELECT $1, line, code, CASE
    WHEN reason IS NOT NULL THEN reason
    WHEN dup_line IS NOT NULL THEN 'duplicate of line ' || dup_line
    ELSE 'already in the set' END
FROM import_staging
WHERE reason IS NOT NULL OR dup_line IS NOT NULL OR in_set
ORDER BY n
"""

# Staged redemptions in file order, a batch at a time: flat memory for any file.
STAGED_REDEMPTIONS = """
SELECT n, line, code, metadata, reason FROM import_staging
WHERE n > $1 ORDER BY n LIMIT 1000
"""

# The columns of the direct path's COPY into ``codes``.
CODE_COLUMNS = ("set_id", "pool_id", "code", "lookup", "metadata")

# --------------------------------------------------------------------------- reports

# Rows the job refused, written in its transaction (a crash keeps no report of rows that
# were not kept either).
INSERT_ERROR = "INSERT INTO import_errors (job_id, line, code, reason) VALUES ($1, $2, $3, $4)"

# errors.csv, in keyset batches (ix_import_errors_job_id_id): each batch a short
# statement on a connection of its own, so a slow client holds nothing open.
ERRORS_PAGE = """
SELECT id, line, code, reason FROM import_errors WHERE job_id = $1 AND id > $2
ORDER BY id LIMIT 5000
"""
