"""A multipart/form-data upload read as a stream: the form fields that come before the
file, then the file's bytes as they arrive. Nothing is spooled or held whole.

Starlette's ``request.form()`` would read the whole body (spooling the file to disk)
before the route runs; an import streams the file straight into COPY instead, so the
option fields must come before the file part (browsers, curl -F in order, httpx and
requests all send them so)."""

from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.errors import BadRequest, UnsupportedMediaType, ValidationFailed

FILE_FIELD = "file"
_MAX_FIELD_BYTES = 1024
_MAX_FIELDS = 50


class Upload:
    """``await Upload.open(request)``, then ``fields``, ``filename``, ``content_type`` and
    ``async for chunk in upload.chunks()``."""

    def __init__(self, request: Request, boundary: bytes) -> None:
        self._stream = request.stream().__aiter__()
        self.fields: dict[str, str] = {}
        self.late_fields: list[str] = []
        self.filename: str | None = None
        self.content_type: str | None = None
        self._file_started = False
        self._in_file = False
        self._file_ended = False
        self._pending: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_type = b""
        self._name = ""
        self._data = bytearray()
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )

    @classmethod
    async def open(cls, request: Request) -> "Upload":
        """Reads up to the start of the file part. 415 for a body that is not multipart."""
        media_type, params = parse_options_header(request.headers.get("content-type", ""))
        if media_type != b"multipart/form-data":
            raise UnsupportedMediaType(
                "Send the file as multipart/form-data, in a part named 'file'."
            )
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("The multipart body has no boundary.")
        upload = cls(request, boundary)
        while not upload._file_started and await upload._read():
            pass
        if not upload._file_started:
            raise ValidationFailed(
                "The upload has no file: send it in a multipart part named 'file'.",
                errors=[{"loc": ["body", FILE_FIELD], "message": "missing", "type": "missing"}],
            )
        return upload

    async def _read(self) -> bool:
        """Feed the parser one more chunk of the request; False at the end of the body."""
        if self._ended:
            return False
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            chunk = b""
        try:
            if chunk:
                self._parser.write(chunk)
                return True
            self._parser.finalize()
        except FormParserError:
            raise BadRequest("The multipart body is malformed.") from None
        self._ended = True
        return False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes, then the rest of the body is read (and checked)."""
        while True:
            while self._pending:
                yield self._pending.pop(0)
            if not await self._read():
                break
        while self._pending:
            yield self._pending.pop(0)
        if not self._file_ended:
            raise BadRequest("The multipart body ended inside the file part.")

    # Parser callbacks: plain functions called from parser.write().

    def _on_part_begin(self) -> None:
        self._disposition = self._part_type = b""
        self._data = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.lower()
        if name == b"content-disposition":
            self._disposition = self._header_value
        elif name == b"content-type":
            self._part_type = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == FILE_FIELD and not self._file_started:
            self._file_started = self._in_file = True
            raw = options.get(b"filename")
            self.filename = raw.decode("utf-8", "replace")[:255] if raw else None
            self.content_type = self._part_type.decode("latin-1").strip() or None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        self._data += data[start:end]
        if len(self._data) > _MAX_FIELD_BYTES:
            raise ValidationFailed(f"The form field '{self._name}' is too long.")

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_ended = True
            return
        if self._file_started:
            self.late_fields.append(self._name)
            return
        if len(self.fields) >= _MAX_FIELDS:
            raise ValidationFailed("The upload has too many form fields.")
        self.fields[self._name] = self._data.decode("utf-8", "replace")
