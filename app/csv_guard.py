"""The CSV formula guard: one definition for every CSV the service writes.

A cell starting with one of these characters is run as a formula by spreadsheets (CSV
injection); a leading apostrophe makes it text. Exports apply it in SQL (PostgreSQL
formats the rows), error reports and delivery messages in Python."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_FORMULA_SQL = "ARRAY['=', '+', '-', '@', E'\\t', E'\\r']"


def cell(value: object) -> str:
    """``value`` as CSV cell text, neutralised when it would start a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def cell_sql(expression: str) -> str:
    """The same guard as a SQL expression over the text ``expression``."""
    return (
        f"CASE WHEN left({expression}, 1) = ANY ({_FORMULA_SQL}) "
        f"THEN '''' || {expression} ELSE {expression} END"
    )
