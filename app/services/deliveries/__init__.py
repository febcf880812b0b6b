"""Deliveries: target lists, the pre-send analysis, confirm and the messages.

- ``drafts``: load, list, the public view; create and change a draft.
- ``targets``: targets added from JSON or a streamed CSV; the target list.
- ``analysis``: the pre-send analysis (messages, codes needed and free).
- ``confirm``: the confirm engine and ``Confirmations``, the process object that runs
  it; the one module here that opens its own transactions (on plain pool connections).
- ``failures``: reported failures give their codes back.
- ``giveback``: giving a delivery's codes back (a failed confirm, reported failures).
- ``messages``: one target's preview; the export of the rendered messages.
- ``templates``: the sandboxed Jinja2 templates of subject and body.
- ``sql``: every raw SQL statement of the package."""

from app.services.deliveries.analysis import analyze
from app.services.deliveries.confirm import Confirmations, ConfirmationsDep, confirm_delivery
from app.services.deliveries.drafts import (
    create_delivery,
    get_delivery,
    list_deliveries,
    public_of,
    update_delivery,
)
from app.services.deliveries.failures import record_failures
from app.services.deliveries.messages import (
    Format,
    MessageSource,
    export_messages,
    messages_source,
    preview,
)
from app.services.deliveries.targets import add_targets, add_targets_csv, list_targets

__all__ = [
    "Confirmations",
    "ConfirmationsDep",
    "Format",
    "MessageSource",
    "add_targets",
    "add_targets_csv",
    "analyze",
    "confirm_delivery",
    "create_delivery",
    "export_messages",
    "get_delivery",
    "list_deliveries",
    "list_targets",
    "messages_source",
    "preview",
    "public_of",
    "record_failures",
    "update_delivery",
]
