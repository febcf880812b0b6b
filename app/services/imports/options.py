"""The form fields of an upload, checked into ``ImportOptions``."""

from dataclasses import dataclass
from typing import Any

from app.errors import ValidationFailed
from app.models.import_job import ImportFormat, ImportKind, ImportMode
from app.services.imports.readers import check_encoding


@dataclass(frozen=True)
class ImportOptions:
    kind: ImportKind
    format: ImportFormat
    mode: ImportMode
    delimiter: str = ","
    quotechar: str = '"'
    header: bool | None = True  # None: guessed (redemption files)
    encoding: str = "utf-8"
    code_column: str | None = None
    pool_column: str | None = None
    pool: str = "default"
    force: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "delimiter": self.delimiter,
            "quotechar": self.quotechar,
            "header": self.header,
            "encoding": self.encoding,
            "code_column": self.code_column,
            "pool_column": self.pool_column,
            "pool": self.pool,
            "force": self.force,
        }


def invalid(field: str, message: str) -> ValidationFailed:
    """A 422 that names the form field at fault."""
    return ValidationFailed(
        f"{field}: {message}",
        errors=[{"loc": ["body", field], "message": message, "type": "value_error"}],
    )


def refuse_late_fields(late: list[str]) -> None:
    """The file is read as it arrives, so a form field after it came too late."""
    if late:
        raise invalid(late[0], "form fields must come before the file part")


def _bool(fields: dict[str, str], name: str, default: bool | None) -> bool | None:
    value = fields.get(name)
    if value is None or value == "":
        return default
    # The document types the field boolean: its text is true or false.
    if value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    raise invalid(name, "must be true or false")


def _char(fields: dict[str, str], name: str, default: str) -> str:
    value = fields.get(name, default)
    if not value:
        # curl -F delimiter=';' sends an empty field (';' ends curl's value): never
        # read it as the default.
        raise invalid(name, "must be one character, not empty (with curl use --form-string)")
    if value in ("\\t", "tab"):
        value = "\t"
    if len(value) != 1 or value in "\r\n":
        raise invalid(name, "must be one character")
    return value


_FORM_FIELDS = {
    "format",
    "delimiter",
    "quotechar",
    "header",
    "encoding",
    "code_column",
    "pool_column",
    "pool",
    "mode",
    "force",
}


def parse_options(
    fields: dict[str, str],
    *,
    kind: ImportKind,
    content_type: str | None,
    filename: str | None,
) -> ImportOptions:
    """The form fields of an upload, checked; 422 names the field at fault."""
    unknown = sorted(set(fields) - _FORM_FIELDS)
    if unknown:
        raise invalid(unknown[0], "unknown form field")
    guessed = ImportFormat.csv
    media = (content_type or "").split(";")[0].strip().lower()
    name = (filename or "").lower()
    if "xml" in media or name.endswith(".xml"):
        guessed = ImportFormat.xml
    elif media == "text/plain" or name.endswith(".txt"):
        guessed = ImportFormat.text
    try:
        fmt = ImportFormat(fields["format"]) if fields.get("format") else guessed
    except ValueError:
        raise invalid("format", "must be csv, xml or text") from None
    try:
        mode = ImportMode(fields.get("mode") or ImportMode.partial)
    except ValueError:
        raise invalid("mode", "must be partial or all_or_nothing") from None
    if kind is ImportKind.redemptions and fmt is not ImportFormat.csv:
        raise invalid("format", "redemption files are CSV")
    encoding = (fields.get("encoding") or "utf-8").strip()
    check_encoding(encoding)
    delimiter = _char(fields, "delimiter", ",")
    quotechar = _char(fields, "quotechar", '"')
    if delimiter == quotechar:
        raise invalid("quotechar", "must differ from the delimiter")
    pool = (fields.get("pool") or "default").strip()
    if not pool or len(pool) > 200:
        raise invalid("pool", "must be 1 to 200 characters")
    default_header = None if kind is ImportKind.redemptions else True
    return ImportOptions(
        kind=kind,
        format=fmt,
        mode=mode,
        delimiter=delimiter,
        quotechar=quotechar,
        header=_bool(fields, "header", default_header),
        encoding=encoding,
        code_column=(fields.get("code_column") or "").strip() or None,
        pool_column=(fields.get("pool_column") or "").strip() or None,
        pool=pool,
        force=bool(_bool(fields, "force", False)),
    )
