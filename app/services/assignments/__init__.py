"""The assignment engine: one code to one recipient, at most once, under any concurrency.

- ``service``: the entry points (assign, list); the transactional path.
- ``claim``: the claim on the plain asyncpg pool, the coalescer and the scan hint.
- ``fast_path``: ``POST /v1/coupon-sets/{set_id}/assignments`` on the lean path.
- ``rules``: what every path shares (``ensure_usable``, the public view).
- ``sql``: the raw statements; the claim functions are in ``app/sql/``."""

from app.services.assignments.claim import Assigned, ClaimCoalescer, Claimer, Claims, Miss
from app.services.assignments.fast_path import HandedOver
from app.services.assignments.rules import ensure_usable
from app.services.assignments.service import assign, list_assignments

__all__ = [
    "Assigned",
    "ClaimCoalescer",
    "Claimer",
    "Claims",
    "HandedOver",
    "Miss",
    "assign",
    "ensure_usable",
    "list_assignments",
]
