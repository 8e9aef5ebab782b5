"""Notebook housekeeping: ``python -m mobileunet.nbtools strip-widgets NB...`` and ``student-copies``.

Committed notebooks keep their outputs (what a learner sees on the web) but no
saved widget state, which would bloat them and go stale.

Exercises follow nbgrader's convention: in a solution cell, whose first line is
``# Exercise NN.M: <the task in one line>``, the answer sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; the next cell calls a check
from ``mobileunet.checks``. ``student-copies`` writes copies of the notebooks
for a class: each solution region becomes a ``raise NotImplementedError("your
turn: ...")`` at the region's indentation, every output and execution count is
cleared, saved widget state goes, and the check cells stay.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISE = re.compile(r"^# Exercise (\d\d\.\d+): (.+)$", re.M)
MARKERISH = re.compile(r"(BEGIN|END)\s*SOLUTION", re.I)
"""Anything that looks like a solution marker: only the exact markers, alone on a line, are accepted."""


PROGRESS_BAR = re.compile(r"\d+%\|.*\| \d+/\d+")
"""tqdm's text form, which is all a progress-bar widget leaves once its state is stripped."""


def strip_widgets(path: str | Path) -> None:
    """Drop ``metadata.widgets`` from a notebook, in place, and the progress bars that only it could draw.

    Without its saved state a tqdm widget's output is the frozen text of its
    first frame (``0%| 0/300``), which a reader on the web takes for a run
    that never started; ``train.fit`` prints a summary line instead, which stays.
    Every other output is kept.
    """
    path = Path(path)
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if not _is_progress_bar(o)]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _is_progress_bar(output: dict) -> bool:
    data = output.get("data", {})
    text = "".join(data.get("text/plain", ""))
    return "application/vnd.jupyter.widget-view+json" in data and bool(PROGRESS_BAR.search(text))


def stub_solutions(source: str) -> str:
    """A solution cell's source with each solution region replaced by a "your turn" stub.

    Example:
        >>> print(stub_solutions("# Exercise 01.2: add one\\ndef f(x):\\n    ### BEGIN SOLUTION\\n"
        ...                      "    return x + 1\\n    ### END SOLUTION"))
        # Exercise 01.2: add one
        def f(x):
            raise NotImplementedError("your turn: exercise 01.2 — add one")
    """
    task = EXERCISE.search(source)
    what = f"exercise {task[1]} — {task[2].strip()}" if task else "this exercise"
    stub = f"raise NotImplementedError({json.dumps('your turn: ' + what, ensure_ascii=False)})"
    out, inside = [], False
    for n, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker not in (BEGIN, END) and MARKERISH.search(line):
            raise ValueError(f"line {n}: {line.strip()!r} looks like a solution marker but is not one: write "
                             f"{BEGIN!r} or {END!r} alone on its line")
        if marker == BEGIN:
            if inside:
                raise ValueError(f"line {n}: {BEGIN} inside another solution region: close it with {END}")
            out.append(line[: len(line) - len(line.lstrip())] + stub)
            inside = True
        elif marker == END:
            if not inside:
                raise ValueError(f"line {n}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"a {BEGIN} is never closed: add {END} after the solution")
    return "\n".join(out)


def student_copy(src: str | Path, dst: str | Path) -> int:
    """Write the student version of notebook ``src`` to ``dst``; returns how many cells were stubbed."""
    import nbformat

    nb = nbformat.read(str(src), as_version=4)
    stubbed = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)               # run timestamps
        if cell.cell_type != "code":
            continue
        if BEGIN in cell.source:
            try:
                cell.source = stub_solutions(cell.source)
            except ValueError as err:
                raise ValueError(f"{src}, cell {cell.get('id', '?')}: {err}") from None
            stubbed += 1
        cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dst))
    return stubbed


def student_copies(notebooks: list[Path], out: Path, force: bool = False) -> None:
    """``student_copy`` each notebook into ``out``: all of them or none.

    Refuses an ``out`` that is, or lies inside, a folder of the lessons being
    copied (the solutions would be lost), and existing files there unless
    ``force``. The copies are made in a temporary folder first, so a failure
    on one notebook leaves ``out`` as it was.
    """
    import shutil
    import tempfile

    out = Path(out)
    sources = {nb.resolve().parent for nb in notebooks}
    target = out.resolve()
    for folder in sources:
        if target == folder or folder in target.parents:
            raise ValueError(f"--out {out} is {'' if target == folder else 'inside '}the lessons' own folder "
                             f"({folder}): the student copies would overwrite the solutions; use e.g. build/student")
    clash = [out / nb.name for nb in notebooks if (out / nb.name).exists()]
    if clash and not force:
        raise ValueError(f"{len(clash)} file(s) exist in {out} (e.g. {clash[0]}): use --force to replace them, "
                         f"or another --out")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".student-", dir=out) as tmp:
        made = [(Path(tmp) / nb.name, out / nb.name, student_copy(nb, Path(tmp) / nb.name)) for nb in notebooks]
        for tmp_path, dst, stubbed in made:
            shutil.move(str(tmp_path), str(dst))
            print(f"{dst}: {stubbed} exercise cell(s) stubbed")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobileunet.nbtools", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    strip = sub.add_parser("strip-widgets", help="drop saved widget state, keep outputs (in place)")
    strip.add_argument("notebooks", nargs="+", type=Path)
    copies = sub.add_parser("student-copies", help="copies with solutions stubbed and outputs cleared")
    copies.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to copy (default: notebooks/[0-9]*.ipynb)")
    copies.add_argument("--out", type=Path, default=Path("build/student"),
                        help="folder to write (default: %(default)s)")
    copies.add_argument("--force", action="store_true", help="replace copies already in --out")
    args = parser.parse_args(argv)
    if args.command == "strip-widgets":
        for p in args.notebooks:
            strip_widgets(p)
        return 0
    notebooks = args.notebooks or sorted(Path("notebooks").glob("[0-9]*.ipynb"))
    if not notebooks:
        parser.error("no notebooks under notebooks/: run from the course folder or name them")
    try:
        student_copies(notebooks, args.out, force=args.force)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
