"""`CsvLog`: the CSV training logs (`train.csv`, `eval.csv`) of `mimi train` and `moshi-lm train`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class CsvLog:
    """A CSV log of rows keyed by `step`; a resumed run drops the rows past its checkpoint's
    step, then appends. Floats are written with 6 significant digits; missing fields stay empty."""

    def __init__(self, path: Path, fields: list[str], resume_step: int):
        self.path, self.fields = path, fields
        rows = []
        if resume_step and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
