"""Readers of import files: bytes in, rows out, incrementally and with flat memory.

Each reader is fed the file chunk by chunk (``feed``) and finished (``close``); both
return the rows complete so far as ``Row`` objects: a line number (1-based, the header
counted) and the cells, or the reason the reader itself refuses the row (an unbalanced
quote, a wrong column count). A delivery's CSV of targets is read by ``CsvReader`` too."""

import codecs
import csv
import io
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from app.errors import ValidationFailed

# A quoted field may hold line breaks, but a record longer than this is taken for an
# unbalanced quote: its first line is refused and reading resumes on the next line.
MAX_RECORD_CHARS = 65_536


class Row:
    """A row of the file: its cells (named by ``names``, or by the reader's ``columns``
    when ``names`` is None), or the reason the reader refused it."""

    __slots__ = ("line", "names", "reason", "values")

    def __init__(
        self,
        line: int,
        values: list[str] | None = None,
        *,
        names: list[str] | None = None,
        reason: str | None = None,
    ) -> None:
        self.line, self.values, self.names, self.reason = line, values or [], names, reason


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

    columns = ["code"]  # noqa: RUF012 (read only)

    def __init__(self, encoding: str) -> None:
        self._lines = _Lines(encoding)
        self._line = 0

    def _rows(self, lines: list[str]) -> list[Row]:
        rows = []
        for text in lines:
            self._line += 1
            if code := text.strip():
                rows.append(Row(self._line, [code]))
        return rows

    def feed(self, chunk: bytes) -> list[Row]:
        return self._rows(self._lines.feed(chunk))

    def close(self) -> list[Row]:
        return self._rows(self._lines.feed(b"", final=True))


class CsvReader:
    """CSV through Python's ``csv`` module, a batch of complete records at a time.

    The decoded text is cut after the last line break that is outside quotes (where the
    count of quote characters so far is even: an escaped quote is two of them), so the
    csv reader never runs dry inside a quoted field; the rest waits for more text. A
    record still open after ``MAX_RECORD_CHARS`` is taken for an unbalanced quote: its
    first line is refused and reading resumes on the next line."""

    def __init__(
        self,
        *,
        encoding: str,
        delimiter: str,
        quotechar: str,
        header: bool,
        ragged: bool = False,
    ) -> None:
        self._decoder = _decoder(encoding)
        self._quote = quotechar
        self._format = {"delimiter": delimiter, "quotechar": quotechar, "strict": True}
        self._text = ""  # text after the last complete record
        self._skipping = False  # dropping a refused line up to its end
        self._line = 0  # lines handed to the csv reader so far
        self._want_header = header
        self._ragged = ragged  # rows may have any number of cells (redemption files)
        self.columns: list[str] | None = None

    def _boundary(self, text: str) -> int:
        """Length of the longest prefix of ``text`` made of complete records."""
        end = text.rfind("\n")
        if end < 0:
            return 0
        odd = text.count(self._quote, 0, end) % 2
        while odd:
            before = text.rfind("\n", 0, end)
            if before < 0:
                return 0
            odd ^= text.count(self._quote, before, end) % 2
            end = before
        return end + 1

    def _records(self, text: str, *, final: bool) -> list[Row]:
        rows: list[Row] = []
        text = self._text + text
        while True:
            if self._skipping:  # the rest of a refused line
                end = text.find("\n")
                if end < 0:
                    text = ""
                    break
                text, self._skipping = text[end + 1 :], False
            cut = self._boundary(text)
            if cut:
                rows += self._parse(text[:cut])
                text = text[cut:]
            if len(text) <= MAX_RECORD_CHARS:
                break
            # No record ends within the bound (an unbalanced quote, or a line without
            # end): its first line is refused and reading resumes after it.
            self._line += 1
            rows.append(Row(self._line, reason="unbalanced quote"))
            self._skipping = True
        if final and text:
            rows += self._parse(text)
            text = ""
        self._text = text
        return rows

    def _parse(self, text: str) -> list[Row]:
        rows: list[Row] = []
        reader = csv.reader(io.StringIO(text, newline=""), **self._format)  # type: ignore[arg-type]
        base, done = self._line, 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rows.append(Row(base + done + 1, reason=f"malformed CSV: {exc}"))
                done = reader.line_num
                continue
            start, done = base + done + 1, reader.line_num
            if not cells:
                continue
            if self._ragged:
                rows.append(Row(start, cells))
                continue
            if self.columns is None:
                if self._want_header:
                    self.columns = [cell.strip() for cell in cells]
                    continue
                self.columns = [str(n) for n in range(1, len(cells) + 1)]
            if len(cells) != len(self.columns):
                reason = f"expected {len(self.columns)} columns, found {len(cells)}"
                rows.append(Row(start, reason=reason))
                continue
            rows.append(Row(start, cells))
        self._line = base + text.count("\n") + (0 if text.endswith("\n") else 1)
        return rows

    def feed(self, chunk: bytes) -> list[Row]:
        return self._records(self._decoder.decode(chunk), final=False)

    def close(self) -> list[Row]:
        return self._records(self._decoder.decode(b"", final=True), final=True)


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
            self._row = Row(line, list(attrib.values()), names=[f"@{k}" for k in attrib])
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
            assert self._row.names is not None
            self._row.names.append(self._child)
            self._row.values.append("".join(self._text_child).strip())
        elif self._depth == 2 and self._row is not None:
            assert self._row.names is not None
            self._row.names.append("code")
            self._row.values.append("".join(self._text).strip())
            self.rows.append(self._row)
            self._row = None
        self._depth -= 1

    def close(self) -> None:
        return None


class XmlReader:
    """``<codes><code pool="p" any="metadata">VALUE<extra>metadata</extra></code>...</codes>``
    through defusedxml: a DTD (and so any entity declaration or external reference) is
    refused at the first byte of it, before anything is expanded or fetched."""

    columns = None  # each row names its cells

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
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        raise ValidationFailed(
            f"Unknown encoding '{encoding}'.",
            errors=[{"loc": ["body", "encoding"], "message": "unknown", "type": "value_error"}],
        ) from None
