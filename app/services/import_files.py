"""Readers of import files: bytes in, rows out, incrementally and with flat memory.

Each reader is fed the file chunk by chunk (``feed``) and finished (``close``); both
return the rows complete so far as ``(line, cells)`` where ``cells`` maps a column
name to its text (``line`` is 1-based and counts the header). A row the reader itself
must refuse (an unbalanced quote, a wrong column count) comes with a reason instead."""

import codecs
import csv
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from app.errors import ValidationFailed

# A quoted field may hold line breaks, but a record longer than this is taken for an
# unbalanced quote: its first line is refused and reading resumes on the next line.
MAX_RECORD_CHARS = 65_536


@dataclass
class Row:
    line: int
    cells: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


class FileRefused(Exception):
    """The file cannot be read at all (malformed or forbidden XML); the job fails."""


def _decoder(encoding: str) -> codecs.IncrementalDecoder:
    # utf-8-sig drops a BOM when there is one. Undecodable bytes become lone surrogates,
    # so the row that holds them is refused by the usual check instead of the file.
    name = codecs.lookup(encoding).name
    if name == "utf-8":
        name = "utf-8-sig"
    return codecs.getincrementaldecoder(name)(errors="surrogateescape")


class _Lines:
    """Text decoded incrementally and cut into lines (each with its line break)."""

    def __init__(self, encoding: str) -> None:
        self._decoder = _decoder(encoding)
        self._rest = ""

    def feed(self, chunk: bytes, *, final: bool = False) -> list[str]:
        text = self._rest + self._decoder.decode(chunk, final=final)
        lines = text.split("\n")
        self._rest = "" if final else lines.pop()
        out = [line + "\n" for line in lines[:-1]] if final else [line + "\n" for line in lines]
        if final and lines[-1]:
            out.append(lines[-1])
        return out


class TextReader:
    """One code per line; blank lines are skipped."""

    def __init__(self, encoding: str) -> None:
        self._lines = _Lines(encoding)
        self._line = 0

    def _rows(self, lines: list[str]) -> list[Row]:
        rows = []
        for text in lines:
            self._line += 1
            if text.strip():
                rows.append(Row(self._line, {"code": text.strip()}))
        return rows

    def feed(self, chunk: bytes) -> list[Row]:
        return self._rows(self._lines.feed(chunk))

    def close(self) -> list[Row]:
        return self._rows(self._lines.feed(b"", final=True))


class _Feed:
    """The csv reader's input: lines of complete records. Unlike a generator it can run
    dry and be refilled."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.consumed = 0

    def __iter__(self) -> "_Feed":
        return self

    def __next__(self) -> str:
        if not self.lines:
            raise StopIteration
        self.consumed += 1
        return self.lines.popleft()


class CsvReader:
    """CSV through Python's ``csv`` module, one complete record at a time.

    A record is complete when its quote characters balance (an escaped quote is two of
    them), so the csv reader never runs dry inside a quoted field. With a header the
    cells are named after it, otherwise ``1``, ``2``... (1-based column numbers)."""

    def __init__(
        self,
        *,
        encoding: str,
        delimiter: str,
        quotechar: str,
        header: bool,
        ragged: bool = False,
    ) -> None:
        self._ragged = ragged  # rows may have any number of cells, named by position
        self._lines = _Lines(encoding)
        self._quote = quotechar
        self._feed = _Feed()
        self._queued = 0  # lines handed to the feed so far
        self._pending: list[str] = []
        self._reader = csv.reader(self._feed, delimiter=delimiter, quotechar=quotechar, strict=True)
        self._want_header = header
        self.columns: list[str] | None = None

    def _queue(self, lines: list[str]) -> None:
        self._feed.lines.extend(lines)
        self._queued += len(lines)

    def _records(self, lines: list[str], *, final: bool) -> list[Row]:
        refused: list[Row] = []
        todo = deque(lines)
        while todo:
            self._pending.append(todo.popleft())
            if sum(part.count(self._quote) for part in self._pending) % 2 == 0:
                self._queue(self._pending)
                self._pending = []
            elif sum(map(len, self._pending)) > MAX_RECORD_CHARS:
                refused.append(Row(self._queued + 1, reason="unbalanced quote"))
                self._queue(["\n"])  # keeps the line count; a blank record is skipped
                todo.extendleft(reversed(self._pending[1:]))
                self._pending = []
        if final and self._pending:
            # The file ends inside a quoted field: the csv reader says so.
            self._queue(self._pending)
            self._pending = []
        return refused + self._parse()

    def _parse(self) -> list[Row]:
        rows: list[Row] = []
        while self._feed.lines:
            start = self._feed.consumed + 1
            try:
                cells = next(self._reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rows.append(Row(start, reason=f"malformed CSV: {exc}"))
                continue
            if not cells:
                continue
            if self._ragged:
                rows.append(Row(start, {str(n): cell for n, cell in enumerate(cells, 1)}))
                continue
            if self._want_header and self.columns is None:
                self.columns = [cell.strip() for cell in cells]
                continue
            if self.columns is None:
                self.columns = [str(n) for n in range(1, len(cells) + 1)]
            if len(cells) != len(self.columns):
                reason = f"expected {len(self.columns)} columns, found {len(cells)}"
                rows.append(Row(start, reason=reason))
                continue
            rows.append(Row(start, dict(zip(self.columns, cells, strict=True))))
        return rows

    def feed(self, chunk: bytes) -> list[Row]:
        return self._records(self._lines.feed(chunk), final=False)

    def close(self) -> list[Row]:
        return self._records(self._lines.feed(b"", final=True), final=True)


class _XmlTarget:
    """Collects ``<code>`` elements as rows: text is the code, ``pool`` the pool, other
    attributes and child elements are metadata. No tree is kept."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.rows: list[Row] = []
        self._depth = 0
        self._row: Row | None = None
        self._child: str | None = None
        self._text: list[str] = []
        self._text_child: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._depth += 1
        if self._depth == 1:
            if tag != "codes":
                raise FileRefused(f"the root element must be <codes>, not <{tag}>")
        elif self._depth == 2:
            if tag != "code":
                raise FileRefused(f"<codes> holds <code> elements, not <{tag}>")
            line = int(self.parser.parser.CurrentLineNumber)
            self._row = Row(line, {f"@{k}": v for k, v in attrib.items()})
            self._text = []
        elif self._depth == 3:
            self._child, self._text_child = tag, []
        else:
            raise FileRefused("metadata elements inside <code> hold text only")

    def data(self, text: str) -> None:
        if self._depth == 2:
            self._text.append(text)
        elif self._depth == 3:
            self._text_child.append(text)

    def end(self, tag: str) -> None:
        if self._depth == 3 and self._row is not None and self._child is not None:
            self._row.cells[self._child] = "".join(self._text_child).strip()
        elif self._depth == 2 and self._row is not None:
            self._row.cells["code"] = "".join(self._text).strip()
            self.rows.append(self._row)
            self._row = None
        self._depth -= 1

    def close(self) -> None:
        return None


class XmlReader:
    """``<codes><code pool="p" any="metadata">VALUE<extra>metadata</extra></code>...</codes>``
    through defusedxml: a DTD (and so any entity declaration or external reference) is
    refused at the first byte of it, before anything is expanded or fetched."""

    def __init__(self) -> None:
        self._target = _XmlTarget()
        self._parser = DefusedXMLParser(
            target=self._target, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        self._target.parser = self._parser

    def _drain(self) -> list[Row]:
        rows, self._target.rows = self._target.rows, []
        return rows

    def feed(self, chunk: bytes) -> list[Row]:
        try:
            self._parser.feed(chunk)
        except DefusedXmlException as exc:
            raise FileRefused(f"forbidden XML: {type(exc).__name__} ({exc})") from None
        except SyntaxError as exc:  # xml.etree's ParseError
            raise FileRefused(f"malformed XML: {exc}") from None
        return self._drain()

    def close(self) -> list[Row]:
        try:
            self._parser.close()
        except DefusedXmlException as exc:
            raise FileRefused(f"forbidden XML: {type(exc).__name__} ({exc})") from None
        except SyntaxError as exc:
            raise FileRefused(f"malformed XML: {exc}") from None
        return self._drain()


Reader = TextReader | CsvReader | XmlReader


def check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValidationFailed(
            f"Unknown encoding '{encoding}'.",
            errors=[{"loc": ["body", "encoding"], "message": "unknown", "type": "value_error"}],
        ) from None
