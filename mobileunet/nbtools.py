"""Notebook housekeeping for maintainers: ``python -m mobileunet.nbtools strip-widgets NB``.

Committed notebooks keep their outputs (what a learner sees on the web) but no
saved widget state, which would bloat them and go stale.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def strip_widgets(path: str | Path) -> None:
    """Drop ``metadata.widgets`` from a notebook, in place, keeping every output."""
    path = Path(path)
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "strip-widgets":
        print("usage: python -m mobileunet.nbtools strip-widgets NOTEBOOK...", file=sys.stderr)
        return 2
    for p in argv[1:]:
        strip_widgets(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
