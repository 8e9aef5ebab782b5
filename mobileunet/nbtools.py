"""Notebook housekeeping: ``python -m mobileunet.nbtools strip-widgets | student-copies | nbgrader-metadata |
hosted-cell``.

Committed notebooks keep their outputs (what a learner sees on the web) but no
saved widget state, which would bloat them and go stale.

Exercises follow nbgrader's convention: in a solution cell, whose first line is
``# Exercise NN.M: <the task in one line>``, the answer sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; the next cell calls a check
from ``mobileunet.checks``. ``student-copies`` writes copies of the notebooks
for a class: each solution region becomes a ``raise NotImplementedError("your
turn: ...")`` at the region's indentation, every output and execution count is
cleared, saved widget state goes, and the check cells stay.

``nbgrader-metadata`` gives the same cells the metadata nbgrader reads, so the
lessons are nbgrader source notebooks as committed: a solution cell is an
autograded answer, its check cell an autograder test worth one point, and
every other cell is left as nbgrader's plain cell. Grade ids come from the
exercise number (``ex05_1_solution``, ``ex05_1_check``), so they stay the same
when cells move. Only metadata changes: sources and stored outputs are kept.

``hosted-cell`` puts two cells after each lesson's title: a line of Colab and
Binder badges, and a set-up cell that on a hosted kernel (Colab) clones the
course and installs it without touching the torch already there, and does
nothing anywhere else. Re-run it after regenerating a notebook; ``--check``
says which notebooks lack the cells or hold an old version of them.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .checkpoint import atomic_write_text

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISE = re.compile(r"^# Exercise (\d\d\.\d+): (.+)$", re.M)
MARKERISH = re.compile(r"(BEGIN|END)[\s_-]*(SOLUTION|HIDDEN[\s_-]*TESTS)", re.I)
"""Anything that looks like a solution marker: only the exact markers, alone on a line, are accepted."""


PROGRESS_BAR = re.compile(r"\d+%\|.*\| \d+/\d+")
"""tqdm's text form, which is all a progress-bar widget leaves once its state is stripped."""


WIDGET_NOTE = "An interactive widget: run this cell in JupyterLab to use it (the static figure follows)."
"""What a stored notebook shows for a widget, whose saved state is stripped: its repr would read
``VBox(children=(FloatSlider(...`` to a reader on the web."""


def read_notebook(path: str | Path) -> dict:
    """A notebook file as JSON, or a ``ValueError`` naming the file when it is missing or is not one."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such notebook") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not a readable notebook ({type(err).__name__})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) or not all(
            isinstance(c, dict) and isinstance(c.get("source", ""), (str, list)) for c in nb["cells"]):
        raise ValueError(f"{path} is not a notebook: it needs an object with a list of cells")
    return nb


def strip_widgets(path: str | Path) -> None:
    """Drop ``metadata.widgets`` from a notebook, in place, and the progress bars that only it could draw.

    Without its saved state a tqdm widget's output is the frozen text of its
    first frame (``0%| 0/300``), which a reader on the web takes for a run
    that never started; ``train.fit`` prints a summary line instead, which stays.
    Any other widget's text stand-in becomes ``WIDGET_NOTE``; every other output is kept.
    """
    path = Path(path)
    nb = read_notebook(path)
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if not _is_progress_bar(o)]
            for o in cell["outputs"]:
                if "application/vnd.jupyter.widget-view+json" in o.get("data", {}):
                    o["data"]["text/plain"] = [WIDGET_NOTE]        # not the widget's repr, VBox(children=...)
    atomic_write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", path)


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

    read_notebook(src)                                   # a clear error for what is not a notebook
    nb = nbformat.read(str(src), as_version=4)
    stubbed = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)               # run timestamps
        if cell.cell_type != "code":
            if MARKERISH.search(cell.source):
                raise ValueError(f"{src}, cell {cell.get('id', '?')}: a solution marker in a {cell.cell_type} cell "
                                 f"would not be stubbed: solutions live in code cells")
            continue
        if MARKERISH.search(cell.source):
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
    import os
    import tempfile

    out = Path(out)
    sources = {nb.resolve().parent for nb in notebooks}
    target = out.resolve()
    for folder in sources:
        if target == folder or folder in target.parents:
            raise ValueError(f"--out {out} is {'' if target == folder else 'inside '}the lessons' own folder "
                             f"({folder}): the student copies would overwrite the solutions; use e.g. build/student")
    names = [nb.name for nb in notebooks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two notebooks would be copied to the same {out / twice[0]}: give each name once")
    folders = [f for f in notebooks if (out / f.name).exists() and not (out / f.name).is_file()]
    if folders:
        raise ValueError(f"{out / folders[0].name} is a folder, not a notebook: remove it or use another --out")
    clash = [out / nb.name for nb in notebooks if (out / nb.name).exists()]
    if clash and not force:
        raise ValueError(f"{len(clash)} file(s) exist in {out} (e.g. {clash[0]}): use --force to replace them, "
                         f"or another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot make that folder ({err.strerror})") from None
    with tempfile.TemporaryDirectory(prefix=".student-", dir=out) as tmp:
        made = [(Path(tmp) / nb.name, out / nb.name, student_copy(nb, Path(tmp) / nb.name)) for nb in notebooks]
        for tmp_path, dst, stubbed in made:
            os.replace(tmp_path, dst)                  # same folder: one atomic rename per copy
            print(f"{dst}: {stubbed} exercise cell(s) stubbed")


NBGRADER_SCHEMA = 3
"""The version of nbgrader's cell metadata that nbgrader 0.9 writes and reads."""


def _nbgrader(grade_id: str, solution: bool) -> dict:
    meta = {"grade": not solution, "grade_id": grade_id, "locked": not solution, "schema_version": NBGRADER_SCHEMA,
            "solution": solution, "task": False}
    if not solution:
        meta["points"] = 1
    return dict(sorted(meta.items()))                  # the key order nbformat writes


def nbgrader_metadata(cells: list[dict], where: str = "notebook") -> dict[int, dict]:
    """The nbgrader metadata each exercise cell should carry: ``{cell index: metadata}``.

    A solution cell is a code cell holding ``### BEGIN SOLUTION``; its first line
    names the exercise (``# Exercise 05.1: ...``), and the next code cell is its
    check, which calls ``mobileunet.checks``. Cells left out of the result carry
    no nbgrader metadata. ``where`` names the notebook in errors.

    Example:
        >>> cells = [{"cell_type": "code", "source": "# Exercise 01.2: add one\\n### BEGIN SOLUTION\\n"
        ...           "x = 1\\n### END SOLUTION"},
        ...          {"cell_type": "code", "source": "from mobileunet.checks import check_x\\ncheck_x(x)"}]
        >>> {i: m["grade_id"] for i, m in nbgrader_metadata(cells).items()}
        {0: 'ex01_2_solution', 1: 'ex01_2_check'}
    """
    code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    found: dict[int, dict] = {}
    seen: dict[str, int] = {}
    for n, i in enumerate(code):
        source = _source(cells[i])
        if BEGIN not in source:
            continue
        task = EXERCISE.search(source)
        if not task:
            raise ValueError(f"{where}, cell {i}: a solution cell must start with '# Exercise NN.M: <task>'; "
                             f"its grade id comes from that number")
        ex = task[1]
        if ex in seen:
            raise ValueError(f"{where}, cell {i}: exercise {ex} again (first in cell {seen[ex]}): number it apart")
        check = code[n + 1] if n + 1 < len(code) else None
        if check is None or "mobileunet.checks" not in _source(cells[check]) or BEGIN in _source(cells[check]):
            raise ValueError(f"{where}, cell {i}: exercise {ex} needs a check cell right after it that calls "
                             f"mobileunet.checks (nbgrader grades that cell)")
        seen[ex] = i
        stem = "ex" + ex.replace(".", "_")
        found[i] = _nbgrader(f"{stem}_solution", solution=True)
        found[check] = _nbgrader(f"{stem}_check", solution=False)
    return found


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def _describe(cell: dict, i: int) -> str:
    first = _source(cell).split("\n", 1)[0]
    return f"cell {i} ({cell.get('id', 'no id')}: {first[:60]!r})"


def nbgrader_problems(path: str | Path) -> list[str]:
    """What is missing or wrong in the nbgrader metadata of notebook ``path``, one line per cell."""
    nb = read_notebook(path)
    cells = nb.get("cells", [])
    want = nbgrader_metadata(cells, where=str(path))
    problems = []
    for i, cell in enumerate(cells):
        have, expected = cell.get("metadata", {}).get("nbgrader"), want.get(i)
        if have == expected:
            continue
        if expected is None:
            problems.append(f"{path}: {_describe(cell, i)} is no exercise cell but has nbgrader metadata")
        elif have is None:
            problems.append(f"{path}: {_describe(cell, i)} has no nbgrader metadata (wants {expected['grade_id']})")
        else:
            wrong = sorted(k for k in set(have) | set(expected) if have.get(k) != expected.get(k))
            problems.append(f"{path}: {_describe(cell, i)} has wrong nbgrader metadata: "
                            + ", ".join(f"{k} is {have.get(k)!r}, wants {expected.get(k)!r}" for k in wrong))
    return problems


def write_nbgrader_metadata(path: str | Path) -> int:
    """Give notebook ``path`` the nbgrader metadata of its exercises, in place; returns how many cells changed.

    Only cell metadata changes: sources, outputs and execution counts are kept,
    and the file is written as nbformat writes it (sorted keys, indent 1, UTF-8,
    a final newline) and only when something changed.
    """
    path = Path(path)
    nb = read_notebook(path)
    cells = nb.get("cells", [])
    want = nbgrader_metadata(cells, where=str(path))
    changed = 0
    for i, cell in enumerate(cells):
        meta = cell.setdefault("metadata", {})
        if meta.get("nbgrader") == want.get(i):
            continue
        if i in want:
            meta["nbgrader"] = want[i]
        else:
            del meta["nbgrader"]
        changed += 1
    if changed:
        atomic_write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", path)
    return changed


HOSTED_REPO = "OWNER/mobileunet"
"""Where the course is published on GitHub: the hosted cell clones it and the badges open it there."""
HOSTED_IDS = ("hosted-badges", "hosted-setup")
"""The ids of the two cells ``hosted-cell`` writes (a badge line, then the set-up code): found by id, so re-run."""
HOSTED_CODE = '''\
# On Google Colab this cell fetches the course and installs it, keeping the torch and torchvision the
# kernel already has (pip is told their versions may not change). Anywhere else it does nothing.
import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("mobileunet") is None:
    from importlib.metadata import version

    course, keep = "/content/mobileunet", "/content/keep-torch.txt"
    if not os.path.isdir(course):
        subprocess.run(["git", "clone", "-q", "--depth", "1", "https://github.com/{repo}", course], check=True)
    with open(keep, "w") as pins:
        pins.write(f"torch=={{version('torch')}}\\ntorchvision=={{version('torchvision')}}\\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", keep, "-e", course], check=True)
    sys.path.insert(0, course)                   # this kernel started before the install: let it find the course
'''


def hosted_cells(lesson: str, repo: str = HOSTED_REPO) -> list[dict]:
    """The badge line and the hosted set-up cell for notebook ``lesson`` (a file name), as notebook cells.

    The code cell runs only where ``google.colab`` is imported and the course is
    not: it clones ``repo`` and pip-installs it with torch and torchvision held
    at the versions present. Its outputs stay empty.

    Example:
        >>> badges, setup = hosted_cells("00_setup_and_tour.ipynb")
        >>> badges["cell_type"], setup["cell_type"], setup["outputs"]
        ('markdown', 'code', [])
    """
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ValueError(f"repo {repo!r} is not a GitHub owner/name such as 'OWNER/mobileunet'")
    url = f"{repo}/blob/main/notebooks/{lesson}"
    badges = (f"[![open in Colab](../docs/badges/colab.svg)](https://colab.research.google.com/github/{url}) "
              f"[![launch Binder](../docs/badges/binder.svg)](https://mybinder.org/v2/gh/{repo}/main?urlpath="
              f"lab/tree/notebooks/{lesson})\n\n"
              "*On Colab, run the next cell first: it installs the course. Anywhere else it does nothing.*")
    lines = lambda text: text.splitlines(keepends=True)
    return [{"cell_type": "markdown", "id": HOSTED_IDS[0], "metadata": {}, "source": lines(badges)},
            {"cell_type": "code", "execution_count": None, "id": HOSTED_IDS[1], "metadata": {}, "outputs": [],
             "source": lines(HOSTED_CODE.format(repo=repo).rstrip("\n"))}]


def with_hosted_cells(nb: dict, lesson: str, repo: str = HOSTED_REPO) -> dict:
    """Notebook ``nb`` with the hosted cells right after its title cell (or first), replacing any it had."""
    cells = [c for c in nb["cells"] if c.get("id") not in HOSTED_IDS]
    at = 1 if cells and cells[0].get("cell_type") == "markdown" and _source(cells[0]).startswith("# ") else 0
    return {**nb, "cells": cells[:at] + hosted_cells(lesson, repo) + cells[at:]}


def _unrun(cell: dict) -> dict:
    """``cell`` without what running it leaves besides outputs: its execution count and timestamps."""
    meta = {k: v for k, v in cell.get("metadata", {}).items() if k != "execution"}
    return {**{k: v for k, v in cell.items() if k != "execution_count"}, "metadata": meta}


def write_hosted_cells(path: str | Path, check: bool = False) -> bool:
    """Give notebook ``path`` its hosted cells, in place (only when they differ); returns whether they differed.

    With ``check`` nothing is written. A run's execution count and timestamps
    on the cells are no difference (``course.sh outputs`` leaves them), their
    outputs are. The file is written as nbformat writes it (sorted keys,
    indent 1, UTF-8, a final newline); other cells are kept.
    """
    path = Path(path)
    nb = read_notebook(path)
    want = with_hosted_cells(nb, path.name)
    if [_unrun(c) for c in want["cells"]] == [_unrun(c) for c in nb["cells"]] and want["metadata"] == nb["metadata"]:
        return False                                   # a run's count and timestamps are no change
    if not check:
        atomic_write_text(json.dumps(want, indent=1, sort_keys=True, ensure_ascii=False) + "\n", path)
    return True


def _hosted_command(notebooks: list[Path], check: bool) -> int:
    stale = [p for p in notebooks if write_hosted_cells(p, check=check)]
    if check:
        print("\n".join(f"{p}: hosted cells missing or old (fix: python -m mobileunet.nbtools hosted-cell {p})"
                        for p in stale) or f"hosted cells in order in {len(notebooks)} notebook(s)")
        return 1 if stale else 0
    print(f"hosted cells written to {len(stale)} of {len(notebooks)} notebook(s)")
    return 0


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
    grading = sub.add_parser("nbgrader-metadata", help="give exercise cells nbgrader's metadata (in place)")
    grading.add_argument("notebooks", nargs="*", type=Path,
                         help="notebooks to update (default: notebooks/[0-9]*.ipynb)")
    grading.add_argument("--check", action="store_true",
                         help="change nothing; exit 1 naming each cell whose metadata is missing or wrong")
    hosted = sub.add_parser("hosted-cell", help="the Colab/Binder badges and hosted set-up cell (in place)")
    hosted.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to update (default: notebooks/[0-9]*.ipynb)")
    hosted.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming each notebook whose hosted cells are missing or old")
    args = parser.parse_args(argv)
    if args.command == "strip-widgets":
        try:
            for p in args.notebooks:
                strip_widgets(p)
        except ValueError as err:
            parser.error(str(err))
        return 0
    notebooks = args.notebooks or sorted(Path("notebooks").glob("[0-9]*.ipynb"))
    if not notebooks:
        parser.error("no notebooks under notebooks/: run from the course folder or name them")
    missing = [p for p in notebooks if not p.is_file()]
    if missing:
        parser.error(f"no notebook at {missing[0]}")
    try:
        if args.command == "student-copies":
            student_copies(notebooks, args.out, force=args.force)
        elif args.command == "hosted-cell":
            return _hosted_command(notebooks, args.check)
        elif args.check:
            problems = [line for p in notebooks for line in nbgrader_problems(p)]
            print("\n".join(problems) if problems else f"nbgrader metadata in order in {len(notebooks)} notebook(s)")
            return 1 if problems else 0
        else:
            for p in notebooks:
                print(f"{p}: {write_nbgrader_metadata(p)} cell(s) updated")
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
