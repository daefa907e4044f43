"""The final table and the JSON form of each figure."""

from __future__ import annotations

from typing import Any, NamedTuple


class Figure(NamedTuple):
    """One figure with the baseline it is read against."""

    name: str
    value: float
    unit: str
    baseline: float
    baseline_name: str
    target: str
    met: bool | None  # None: reported, no target

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "ratio": self.ratio}


def _number(value: float, unit: str) -> str:
    return f"{value:,.1f} {unit}" if unit == "ms" else f"{value:,.0f}{unit}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "baseline", "ratio", "target", "met?")]
    for f in figures:
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        rows.append(
            (
                f.name,
                _number(f.value, f.unit),
                f"{_number(f.baseline, f.unit)} ({f.baseline_name})",
                f"{f.ratio:.2f}x",
                f.target or "-",
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
