"""Charts drawn on the server as SVG geometry (no script, no style attributes, so the
strict CSP holds): the stock bar of a set or pool and the 30-day chart."""

from dataclasses import dataclass

from app.ui.data import DayCount

STOCK_PARTS = ("available", "assigned", "redeemed", "void")


@dataclass(frozen=True)
class Segment:
    part: str
    count: int
    x: float
    width: float


def stock_bar(stock: dict[str, int] | None) -> list[Segment]:
    """Segments of a 100-wide bar, one per status with codes, in STOCK_PARTS order."""
    if not stock:
        return []
    total = sum(stock.get(part, 0) for part in STOCK_PARTS)
    segments, x = [], 0.0
    for part in STOCK_PARTS:
        count = stock.get(part, 0)
        if count and total:
            width = 100 * count / total
            segments.append(Segment(part, count, round(x, 3), round(width, 3)))
            x += width
    return segments


@dataclass(frozen=True)
class Bar:
    label: str  # the day, ISO
    series: str  # assigned | redeemed
    count: int
    x: float
    y: float
    height: float


@dataclass(frozen=True)
class DayChart:
    width: int
    height: int
    peak: int
    bars: list[Bar]


def day_chart(days: list[DayCount], *, height: int = 120) -> DayChart:
    """Two bars per day (assigned, redeemed), scaled to the busiest day."""
    peak = max((max(d.assigned, d.redeemed) for d in days), default=0)
    step, bar = 10, 4
    bars = []
    for i, d in enumerate(days):
        for offset, series, count in ((0, "assigned", d.assigned), (bar, "redeemed", d.redeemed)):
            h = 0.0 if peak == 0 else height * count / peak
            bars.append(
                Bar(d.day.isoformat(), series, count, i * step + offset, height - h, round(h, 2))
            )
    return DayChart(width=max(len(days), 1) * step, height=height, peak=peak, bars=bars)
