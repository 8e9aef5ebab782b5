"""Small plain-text tables: what the lessons print, and what nbval compares."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from .checkpoint import atomic_write_text


def format_cell(v, floatfmt: str | Callable[[float], str] = ".3f", commas_from: int = 10_000) -> str:
    """One table cell as text: floats by ``floatfmt`` (a format spec, or a function of the value giving one),
    whole numbers with thousands separators from ``commas_from`` up, anything else as ``str``.

    Example:
        >>> format_cell(0.12345), format_cell(123456), format_cell(1234, commas_from=0), format_cell("x")
        ('0.123', '123,456', '1,234', 'x')
    """
    if isinstance(v, float):
        return format(v, floatfmt(v) if callable(floatfmt) else floatfmt)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= commas_from:
        return f"{v:,}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                 floatfmt: str = ".3f") -> str:
    """Rows of dicts as an aligned markdown table (it reads as text and renders as markdown)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[format_cell(r.get(c, ""), floatfmt) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out)


def print_table(rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = ".3f") -> None:
    print(format_table(rows, columns, floatfmt))


def write_results(folder, name: str, out: dict, md: str, echo: str | None = None) -> None:
    """How a benchmark script ends: ``out`` to ``folder/name.json``, ``md`` to ``folder/name.md``, then print.

    The folder is made if missing, each file is replaced whole or not at all
    (``checkpoint.atomic_write_text``), and ``echo`` (default: ``md``) is printed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(out, indent=1) + "\n", folder / f"{name}.json")
    atomic_write_text(md, folder / f"{name}.md")
    print(md if echo is None else echo)
