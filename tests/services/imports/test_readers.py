"""The CSV reader on its own: records that never end are bounded."""

import pytest

from app.services.imports.readers import CsvReader


def reader() -> CsvReader:
    return CsvReader(encoding="utf-8", delimiter=",", quotechar='"', header=True)


@pytest.mark.timeout(10)
def test_a_line_without_end_is_refused_and_reading_goes_on() -> None:
    csv = reader()
    rows = csv.feed(b"code\n" + b"x" * 200_000)
    rows += csv.feed(b"y" * 100 + b"\nOK-1\n") + csv.close()
    assert [(r.line, r.reason, r.values) for r in rows] == [
        (2, "unbalanced quote", []),
        (3, None, ["OK-1"]),
    ]


def test_an_open_quote_arriving_in_one_piece_is_bounded() -> None:
    csv = reader()
    body = b'code\n"OPEN\n' + b"".join(b"C-%d\n" % n for n in range(20_000))
    rows = csv.feed(body) + csv.close()
    assert (rows[0].line, rows[0].reason) == (2, "unbalanced quote")
    assert len([r for r in rows if r.reason is None]) > 10_000
