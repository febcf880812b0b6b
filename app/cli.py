"""The ``coupons`` command line tool: import, export, generate, statistics and API keys
over HTTP.

It talks only to the HTTP API (COUPONS_URL, COUPONS_API_KEY), so it works against any
deployment. Errors are one line on stderr, from the problem body, and a non-zero exit:
1 when the service (or the network) refused, 2 for a usage error; ``coupons import``
exits 3 when the import succeeded but rejected rows (0: every row accepted or a
duplicate). Progress goes to
stderr, results to stdout. The API key is never printed."""

import enum
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

app = typer.Typer(
    help="Talk to a coupon service over its HTTP API (COUPONS_URL, COUPONS_API_KEY).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
api_key_app = typer.Typer(help="Manage API keys (needs an admin key).", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")

err = Console(stderr=True, highlight=False)
DEFAULT_URL = "http://127.0.0.1:8000"
_RETRIES = 3  # attempts of a request that failed on the network or with a 503
EXIT_REJECTED = 3  # `coupons import`: the job succeeded, but some rows were rejected


class Failure(Exception):
    """A refusal to report as one line: ``error: <line>``."""

    def __init__(self, line: str, exit_code: int = 1) -> None:
        super().__init__(line)
        self.line = line
        self.exit_code = exit_code


def _problem_line(response: httpx.Response) -> str:
    """``404 not-found: No coupon set …`` from a problem body, or the status alone."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "type" in body:
        slug = str(body["type"]).rsplit(":", 1)[-1]
        detail = " ".join(str(body.get("detail") or body.get("title") or "").split())
        return f"{response.status_code} {slug}: {detail}"
    return f"{response.status_code} {response.reason_phrase}".strip()


class Client:
    """The one place that speaks HTTP: auth, Idempotency-Key, retries, problems."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self._key = api_key
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "coupons-cli"},
            # Imports and generation of a million codes can take minutes in the request.
            timeout=httpx.Timeout(30.0, read=3600.0),
        )

    def close(self) -> None:
        self._http.close()

    def _network_failure(self, exc: httpx.HTTPError) -> Failure:
        # httpx can quote a header in its message: never let the key through.
        message = str(exc).replace(self._key, "***") or type(exc).__name__
        return Failure(f"cannot talk to {self.url}: {message}")

    def request(
        self,
        method: str,
        path: str,
        *,
        rewind: BinaryIO | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request with one Idempotency-Key for all its attempts, so a retry after a lost
        answer never doubles the effect. ``rewind``: a file to read again on a retry."""
        headers = dict(kwargs.pop("headers", {}))
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        for attempt in range(1, _RETRIES + 1):
            if rewind is not None:
                rewind.seek(0)
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt == _RETRIES or isinstance(exc, httpx.UnsupportedProtocol):
                    raise self._network_failure(exc) from None
                time.sleep(attempt)
                continue
            except httpx.HTTPError as exc:
                raise self._network_failure(exc) from None
            if response.status_code == 503 and attempt < _RETRIES:
                time.sleep(float(response.headers.get("Retry-After", "1") or 1))
                continue
            if response.status_code >= 400:
                raise Failure(_problem_line(response))
            return response
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(self, path: str, params: dict[str, str]) -> Iterator[httpx.Response]:
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise Failure(_problem_line(response))
                yield response
        except httpx.HTTPError as exc:
            raise self._network_failure(exc) from None


class _State:
    url: str = DEFAULT_URL
    api_key: str | None = None


_state = _State()


@contextmanager
def _client() -> Iterator[Client]:
    if not _state.api_key:
        raise Failure("no API key: set COUPONS_API_KEY or pass --api-key", exit_code=2)
    client = Client(_state.url, _state.api_key)
    try:
        yield client
    finally:
        client.close()


def _fail(failure: Failure) -> NoReturn:
    err.print(f"error: {failure.line}", markup=False, soft_wrap=True)
    raise typer.Exit(failure.exit_code)


@app.callback()
def _root(
    url: Annotated[
        str, typer.Option(envvar="COUPONS_URL", help="The service's base URL.")
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="COUPONS_API_KEY", help="The API key to send.", show_default=False),
    ] = None,
) -> None:
    """Talk to a coupon service over its HTTP API (COUPONS_URL, COUPONS_API_KEY)."""
    _state.url, _state.api_key = url, api_key


SetOption = Annotated[str, typer.Option("--set", help="The coupon set's key or id.")]


def _set_path(set_key: str) -> str:
    return f"/v1/coupon-sets/{quote(set_key, safe='')}"


# ------------------------------------------------------------------------------ import


class ImportFormat(enum.StrEnum):
    csv = "csv"
    xml = "xml"
    text = "text"


class _Reading:
    """A file that advances a progress bar as httpx reads it for the upload."""

    def __init__(self, file: BinaryIO, progress: Progress, task: Any) -> None:
        self._file, self._progress, self._task = file, progress, task

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._progress.update(self._task, completed=self._file.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


def _bar(*columns: Any) -> Progress:
    # transient: the bars vanish when done, leaving only the result lines.
    return Progress(*columns, console=err, transient=True)


_DONE = frozenset({"succeeded", "failed"})


def _wait_for_job(client: Client, path: str, job: dict[str, Any]) -> dict[str, Any]:
    with _bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("importing")
        while job.get("status") not in _DONE:
            bar.update(task, description=f"importing: {job.get('rows_read') or 0:,} rows read")
            time.sleep(0.5)
            job = client.json("GET", path)
    return job


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    set_key: SetOption,
    pool: Annotated[str | None, typer.Option(help="Pool for every code (default pool).")] = None,
    code_column: Annotated[
        str | None,
        typer.Option(help="The column of the code: a header name or a 1-based number."),
    ] = None,
    pool_column: Annotated[
        str | None, typer.Option(help="A column naming each code's pool.")
    ] = None,
    format: Annotated[ImportFormat, typer.Option(help="The file's format.")] = ImportFormat.csv,
    delimiter: Annotated[str, typer.Option(help="CSV field delimiter.")] = ",",
    quotechar: Annotated[str, typer.Option(help="CSV quote character.")] = '"',
    header: Annotated[bool, typer.Option(help="Whether the first CSV row is a header.")] = True,
    encoding: Annotated[str, typer.Option(help="The file's text encoding.")] = "utf-8",
    all_or_nothing: Annotated[
        bool, typer.Option(help="Import nothing unless every row is valid.")
    ] = False,
) -> None:
    """Upload a CSV, XML or text file of codes into a set and wait for the import."""
    fields = {
        "format": format.value,
        "delimiter": delimiter,
        "quotechar": quotechar,
        "header": "true" if header else "false",
        "encoding": encoding,
        "mode": "all_or_nothing" if all_or_nothing else "partial",
        **{
            name: value
            for name, value in (
                ("code_column", code_column),
                ("pool_column", pool_column),
                ("pool", pool),
            )
            if value is not None
        },
    }
    try:
        with _client() as client, file.open("rb") as raw:
            size = file.stat().st_size
            boundary = uuid.uuid4().hex
            columns = (TextColumn("uploading"), BarColumn(), DownloadColumn())
            with _bar(*columns, TransferSpeedColumn()) as bar:
                task = bar.add_task("upload", total=size)
                reading = _Reading(raw, bar, task)
                response = client.request(
                    "POST",
                    f"{_set_path(set_key)}/imports",
                    files={"file": (file.name, reading, "application/octet-stream")},
                    data=fields,
                    # One boundary for every attempt: a retry sends the very same body,
                    # which the Idempotency-Key requires.
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                    rewind=raw,
                )
            job: dict[str, Any] = response.json()
            job = _wait_for_job(client, f"{_set_path(set_key)}/imports/{job['id']}", job)
    except Failure as failure:
        _fail(failure)
    again = " (this file was imported before: its job)" if response.status_code == 200 else ""
    typer.echo(
        f"import {job['id']} {job['status']}{again}: {job.get('rows_read', 0):,} rows read, "
        f"{job.get('accepted', 0):,} accepted, {job.get('duplicates', 0):,} duplicates, "
        f"{job.get('rejected', 0):,} rejected"
    )
    errors = job.get("errors") or []
    for error in errors[:10]:
        code = error.get("code")
        shown = f"{code!r}: " if code is not None else ""
        typer.echo(f"  line {error.get('line')}: {shown}{error.get('reason')}")
    if any(_undecoded(error) for error in errors):
        err.print(
            f"hint: some bytes are not {encoding}: pass the file's encoding, "
            "e.g. --encoding latin-1 or --encoding cp1252",
            soft_wrap=True,
        )
    if job["status"] != "succeeded":
        _fail(Failure(f"import {job['status']}: {job.get('error') or 'see the errors above'}"))
    if not job.get("rows_read"):
        _fail(
            Failure(
                f"no rows were read from {file.name}: is it a {format.value.upper()} file "
                f"in {encoding}? (see --format, --encoding, --delimiter, --header)"
            )
        )
    if job.get("rejected"):
        raise typer.Exit(EXIT_REJECTED)


def _undecoded(error: dict[str, Any]) -> bool:
    """Whether a rejected row holds bytes the encoding could not read (shown as U+FFFD)."""
    return "\ufffd" in str(error.get("code") or "") or "decode" in str(error.get("reason"))


# ------------------------------------------------------------------------------ export


class ExportFormat(enum.StrEnum):
    csv = "csv"
    xml = "xml"


@app.command("export")
def export(
    set_key: SetOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="The file to write.")],
    format: Annotated[ExportFormat, typer.Option(help="csv or xml.")] = ExportFormat.csv,
    status: Annotated[str | None, typer.Option(help="Only codes in this status.")] = None,
    pool: Annotated[str | None, typer.Option(help="Only codes of this pool.")] = None,
) -> None:
    """Stream a set's codes to a file (written whole or not at all)."""
    params = {"format": format.value}
    params |= {k: v for k, v in (("status", status), ("pool", pool)) if v is not None}
    target = output.resolve()
    # A temporary file beside the target, renamed over it at the end: a failed export
    # leaves no half file.
    try:
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        _fail(Failure(f"cannot write {output}: {exc.strerror}"))
    temp = Path(temp_name)
    lines = 0
    try:
        columns = (SpinnerColumn(), TextColumn("{task.fields[rows]:,} rows"), DownloadColumn())
        with (
            _client() as client,
            os.fdopen(handle, "wb") as out,
            client.stream(f"{_set_path(set_key)}/export", params) as response,
            _bar(*columns, TransferSpeedColumn()) as bar,
        ):
            task = bar.add_task("export", total=None, rows=0)
            for chunk in response.iter_raw():
                out.write(chunk)
                lines += chunk.count(b"\n")
                bar.update(task, advance=len(chunk), rows=lines)
        temp.replace(target)
    except Failure as failure:
        temp.unlink(missing_ok=True)
        _fail(failure)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    # Lines, not codes, for XML: the root's start and end.
    rows = lines - 1 if format == ExportFormat.csv else max(lines - 3, 0)
    typer.echo(f"exported {rows:,} codes to {output}")


# ---------------------------------------------------------------------------- generate


@app.command("generate")
def generate(
    set_key: SetOption,
    count: Annotated[int, typer.Option(min=1, help="How many codes.")],
    pattern: Annotated[str, typer.Option(help="# a digit, ? a letter, anything else literal.")],
    pool: Annotated[str, typer.Option(help="The pool to add them to.")] = "default",
    prefix: Annotated[str, typer.Option(help="Text before each code.")] = "",
    suffix: Annotated[str, typer.Option(help="Text after each code.")] = "",
) -> None:
    """Generate random codes from a pattern, e.g. SPRING-####-????."""
    body = {"count": count, "pattern": pattern, "pool": pool, "prefix": prefix, "suffix": suffix}
    try:
        spinner = (SpinnerColumn(), TextColumn(f"generating {count:,} codes"))
        with _client() as client, _bar(*spinner) as bar:
            bar.add_task("generate", total=None)
            made = client.json("POST", f"{_set_path(set_key)}/codes/generate", json=body)
    except Failure as failure:
        _fail(failure)
    sample = ", ".join(made.get("sample", [])[:3])
    typer.echo(f"generated {made['generated']:,} codes in pool {made['pool']} (e.g. {sample})")


# ------------------------------------------------------------------------------- stats

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    """One block per count, the highest the tallest (all zero: the lowest)."""
    top = max(counts, default=0)
    return "".join(SPARKS[0 if top == 0 else round(n / top * (len(SPARKS) - 1))] for n in counts)


def _counts_line(counts: dict[str, Any]) -> str:
    return "  ".join(f"{name} {counts[name]:,}" for name in counts)


def _forecast_line(forecast: dict[str, Any]) -> str:
    line = f"{forecast['assign_rate_per_day']:,.1f}/day"
    if forecast["days_of_stock_left"] is not None:
        line += (
            f", {forecast['days_of_stock_left']:,.1f} days left "
            f"(exhausted about {forecast['exhausted_at'][:16].replace('T', ' ')} UTC)"
        )
    return f"{line}  [{forecast['basis']}]"


@app.command("stats")
def stats(set_key: Annotated[str, typer.Argument(help="The coupon set's key or id.")]) -> None:
    """A set's counts, forecast and the assignments of the last 14 days as a sparkline."""
    try:
        with _client() as client:
            found = client.json("GET", f"{_set_path(set_key)}/stats")
            since = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 13 * 86400))
            days = client.json(
                "GET",
                f"{_set_path(set_key)}/stats/timeline",
                params={"metric": "assigned", "bucket": "day", "from": since},
            )
    except Failure as failure:
        _fail(failure)
    typer.echo(f"{found['set_key']} ({found['kind']}), as of {found['as_of'][:19]}Z")
    if found["codes"] is not None:
        typer.echo(f"codes     {_counts_line(found['codes'])}")
        for pool in found["pools"]:
            typer.echo(f"  {pool['name']}: {_counts_line(pool['codes'])}")
            typer.echo(f"    forecast {_forecast_line(pool['forecast'])}")
    else:
        typer.echo(f"shared    {_counts_line(found['shared'])}")
    activity = found["activity"]
    rate = activity["redemption_rate"]
    typer.echo(
        f"activity  assigned {activity['assigned_last_24h']:,} (24 h) "
        f"{activity['assigned_last_7d']:,} (7 d), redeemed {activity['redeemed_last_24h']:,} "
        f"(24 h) {activity['redeemed_last_7d']:,} (7 d), redemption rate "
        + ("-" if rate is None else f"{rate:.1%}")
    )
    typer.echo(f"forecast  {_forecast_line(found['forecast'])}")
    counts = [point["count"] for point in days["points"]]
    typer.echo(f"assigned  {sparkline(counts)}  last {len(counts)} days, max {max(counts):,}/day")


@app.command("recount")
def recount(
    set_key: Annotated[
        str | None, typer.Option("--set", help="Only this set (key or id); all by default.")
    ] = None,
) -> None:
    """Recount the statistics from the rows and repair any drift (needs an admin key)."""
    try:
        with _client() as client:
            params = {"set": set_key} if set_key else {}
            report = client.json("POST", "/v1/stats/recount", params=params)
    except Failure as failure:
        _fail(failure)
    for drift in report["drift"]:
        typer.echo(
            f"{drift['set_key']} {drift['pool'] or '(recipients)'}: "
            + ", ".join(f"{s} {drift[s]:+,}" for s in ("available", "assigned", "redeemed", "void"))
        )
    typer.echo(
        f"repaired {report['repaired']:,} miscounted codes" if report["repaired"] else "exact"
    )


# ----------------------------------------------------------------------------- api-key


@api_key_app.command("create")
def create_api_key(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[
        list[str], typer.Option(help="admin, write, assign, redeem or read; repeatable.")
    ],
    expires_at: Annotated[
        str | None, typer.Option(help="ISO 8601 instant after which it is refused.")
    ] = None,
) -> None:
    """Create an API key and print its secret (shown only this once) on stdout."""
    body: dict[str, Any] = {"name": name, "scopes": scope}
    if expires_at is not None:
        body["expires_at"] = expires_at
    try:
        with _client() as client:
            key = client.json("POST", "/v1/api-keys", json=body)
    except Failure as failure:
        _fail(failure)
    err.print(
        f"created API key {key['name']!r} ({key['id']}), scopes {', '.join(key['scopes'])}. "
        "Its secret follows; it is shown only now.",
        markup=False,
    )
    # The only secret this tool prints, because it was asked for: alone on stdout, so
    # `KEY=$(coupons api-key create ...)` captures it.
    typer.echo(key["secret"])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
