"""Statistics: counters kept by statement-level triggers and folded in the background.

- ``folder``: the process's ``StatsFolder`` (the fold task, the recount, the drift metric)
- ``service``: the reads (a set's statistics, the set list's glance, pools, timelines)
- ``gauges``: the per-pool Prometheus gauges
- ``sql``: every statement, with why it is exact"""

from app.services.stats.folder import StatsFolder

__all__ = ["StatsFolder"]
