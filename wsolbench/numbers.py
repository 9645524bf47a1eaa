"""The typed schema of a run's tabulated numbers (docs/design.md §"Results").

The evaluation suite writes, into `results.json` under `metrics.numbers`, one record per
number a table, `runs.csv` or `statistics.csv` may show: which protocol row it belongs to
(`paper`, `fair`, `wsolevaluation`, or a plugin protocol's suite name), which metric column
(`top1_loc`, `maxboxacc_v2_50`, ...), its value, and — for the trivial and low-level maps
scored beside the method — the baseline's name. Readers (tables, the run summary) read only
these records, never the nested protocol results, so a result layout change touches the
suite alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wsolbench.errors import WsolbenchError

NUMBERS_KEY = "numbers"


@dataclass(frozen=True)
class Number:
    """One tabulated number of a run."""

    protocol: str  # table row's protocol: paper, fair, wsolevaluation or a plugin's name
    metric: str  # column key, e.g. top1_loc, gt_known_loc, maxboxacc_v2, maxboxacc_v2_30
    value: float  # percent for accuracies, [0, 1] for thresholds
    baseline: str = ""  # "" for the run's own method, else the baseline map's name

    def __post_init__(self) -> None:
        for name in ("protocol", "metric", "baseline"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, not {getattr(self, name)!r}")
        if (isinstance(self.value, bool) or not isinstance(self.value, (int, float))
                or not math.isfinite(self.value)):
            raise TypeError(f"value must be a finite number, not {self.value!r}")
        object.__setattr__(self, "value", float(self.value))


def as_records(numbers: Iterable[Number]) -> list[dict[str, Any]]:
    """JSON-ready records (what `results.json` stores)."""
    return [dataclasses.asdict(n) for n in numbers]


def read_numbers(results: dict[str, Any], where: str) -> list[Number]:
    """The typed numbers of one run's results; a missing or malformed record is one error
    naming `where` (the file) and the record."""
    records = (results.get("metrics") or {}).get(NUMBERS_KEY)
    if not isinstance(records, list):
        raise WsolbenchError(f"{where}: no `metrics.{NUMBERS_KEY}` (written by an older "
                             "wsolbench?); re-evaluate the run with `wsolbench evaluate "
                             "--checkpoint` or re-run it")
    fields = {f.name for f in dataclasses.fields(Number)}
    out = []
    for index, record in enumerate(records):
        try:
            if not isinstance(record, dict) or not set(record) <= fields:
                raise TypeError(f"expected keys {sorted(fields)}, got {record!r}")
            out.append(Number(**record))
        except TypeError as exc:
            raise WsolbenchError(f"{where}: metrics.{NUMBERS_KEY}[{index}]: {exc}") from None
    return out
