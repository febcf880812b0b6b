"""The ``coupons`` command line tool (filled in by the bulk issue)."""

import typer

app = typer.Typer(help="Talk to a coupon service over its HTTP API.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Talk to a coupon service over its HTTP API (COUPONS_URL, COUPONS_API_KEY)."""


def main() -> None:
    app()
