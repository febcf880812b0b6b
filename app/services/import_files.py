"""Temporary: deliveries still import the CSV reader from here. Delete at the merge, once
app/services/deliveries imports ``MAX_RECORD_CHARS, CsvReader, Row`` from app.services.imports."""

from app.services.imports import MAX_RECORD_CHARS, CsvReader, Row

__all__ = ["MAX_RECORD_CHARS", "CsvReader", "Row"]
