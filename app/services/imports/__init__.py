"""Import jobs: a file of codes (or redemptions) streamed into a set.

The path of a file, and why it is safe:

1. The job row is inserted and committed at once (status ``running``), so the history
   shows it and its progress (``rows_read``) while the upload streams (jobs.py).
2. Fast path (files of codes, copy.py): the upload is parsed as it arrives and the valid
   rows go by ONE streaming ``COPY`` straight into ``codes``, in a transaction that then
   writes the report, the counts and the audit row and commits. A repeat (in the file,
   in the set, or from a concurrent writer) makes the unique index on (set_id, lookup)
   fail the COPY: everything is rolled back and the staged path takes over, reading the
   upload again from the copy saved on disk as it streamed.
3. Staged path (merge.py): every row goes by ``COPY`` into a temporary staging table of
   the job's own connection, then the merge is ONE transaction: repeats are marked (the
   first occurrence wins), one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into
   ``codes`` (the unique index settles races with concurrent writers), the report, the
   job's counts and its audit row.
4. Once the file is read its SHA-256 is known. Under an advisory lock on (set, kind,
   checksum), held to the commit, a job that already imported the same content answers
   instead (the new job row is removed), unless ``force`` is set.
5. A crash before the commit leaves nothing in ``codes``; the job stays ``running``
   without its owner. The connection running a job holds a session advisory lock on the
   job's id: a ``running`` job whose lock is free has lost its process and is marked
   ``failed`` (at start-up and whenever a re-sent file meets it); a retry then proceeds.

On the staged path, large files (more rows than ``service.SYNC_ROWS``) are answered
``202`` once read and merged by a task of the ``ImportRunner`` created at start-up;
shutdown waits for those tasks.

Modules: options (form fields), readers (CSV, XML, text), rows (a parsed row as a
``Record``), jobs (the job's life), copy (fast path), merge (staged path), reports,
service (the entrances), sql (every statement)."""

from app.services.imports.jobs import StartedImport
from app.services.imports.options import ImportOptions, parse_options
from app.services.imports.readers import MAX_RECORD_CHARS, CsvReader, Row
from app.services.imports.reports import error_report
from app.services.imports.service import ImportRunner, Runner, get_job, list_jobs

__all__ = [
    "MAX_RECORD_CHARS",
    "CsvReader",
    "ImportOptions",
    "ImportRunner",
    "Row",
    "Runner",
    "StartedImport",
    "error_report",
    "get_job",
    "list_jobs",
    "parse_options",
]
