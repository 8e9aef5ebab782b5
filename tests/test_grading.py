"""The lessons as nbgrader source notebooks: their metadata (``nbtools nbgrader-metadata``) and a grading round.

The metadata tests need only the package. The round trip needs nbgrader (the
``grading`` extra, which ``bash course.sh test`` and ``bash course.sh
grading-test`` install) and is skipped without it. It is a class's whole round
in a scratch folder: ``generate_assignment`` on the seven lessons with
exercises, then an assignment of every exercise of lessons 01-07 (each lesson's
setup cell and exercises) that is generated, released into an exchange,
fetched and submitted by two students, one with the solutions and one with a
common mistake in every exercise, collected and autograded in FAST mode; the
points come from nbgrader's gradebook and each mistake's message from the
graded notebooks.
"""
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mobileunet.nbtools import (BEGIN, EXERCISE, HOSTED_IDS, main, nbgrader_metadata, nbgrader_problems,
                               write_nbgrader_metadata)

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _has_exercises(path: Path) -> bool:
    return any(c["cell_type"] == "code" and BEGIN in "".join(c["source"]) for c in _cells(path))


WITH_EXERCISES = [p for p in LESSONS if _has_exercises(p)]


def test_exercise_lessons_are_found():
    assert len(WITH_EXERCISES) >= 7, [p.name for p in WITH_EXERCISES]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.stem[:2] for p in WITH_EXERCISES])
def test_lesson_has_its_nbgrader_metadata(path):
    problems = nbgrader_problems(path)
    assert not problems, ("\n".join(problems) + "\nfix: .venv/bin/python -m mobileunet.nbtools nbgrader-metadata "
                          f"notebooks/{path.name}")


# --- the command on small notebooks ---------------------------------------------------------


_ids = itertools.count()


def code(source: str, outputs: list | None = None) -> dict:
    return {"cell_type": "code", "execution_count": 1 if outputs else None, "id": f"cell-{next(_ids)}",
            "metadata": {}, "outputs": outputs or [], "source": source.splitlines(keepends=True)}


SOLUTION = ("# Exercise 09.1: write double\ndef double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
            "    ### END SOLUTION\n")
CHECK = "# NBVAL_CHECK_OUTPUT\nfrom mobileunet.checks import _call\n\nprint(_call('01.1', double, 3))"
PRINTED = [{"name": "stdout", "output_type": "stream", "text": ["6\n"]}]


def write_notebook(path: Path, cells: list[dict]) -> Path:
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def test_metadata_written_in_place_keeps_sources_and_outputs(tmp_path, capsys):
    cells = [{"cell_type": "markdown", "id": "m", "metadata": {}, "source": ["### Exercise 09.1 · é"]},
             code("x = 1", PRINTED), code(SOLUTION), code(CHECK, PRINTED)]
    path = write_notebook(tmp_path / "09_double.ipynb", cells)
    before = json.loads(path.read_text())
    assert main(["nbgrader-metadata", "--check", str(path)]) == 1
    assert "has no nbgrader metadata (wants ex09_1_solution)" in capsys.readouterr().out

    assert main(["nbgrader-metadata", str(path)]) == 0
    assert "2 cell(s) updated" in capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    after = json.loads(text)
    assert text.endswith("}\n") and "·" in text and text == json.dumps(after, indent=1, sort_keys=True,
                                                                       ensure_ascii=False) + "\n"
    solution, check = (after["cells"][i]["metadata"]["nbgrader"] for i in (2, 3))
    assert solution == {"grade": False, "grade_id": "ex09_1_solution", "locked": False, "schema_version": 3,
                        "solution": True, "task": False}
    assert check == {"grade": True, "grade_id": "ex09_1_check", "locked": True, "points": 1, "schema_version": 3,
                     "solution": False, "task": False}
    for cell in after["cells"]:
        cell["metadata"].pop("nbgrader", None)
    assert after == before                                   # nothing but the metadata changed

    assert main(["nbgrader-metadata", "--check", str(path)]) == 0
    assert write_nbgrader_metadata(path) == 0 and path.read_text(encoding="utf-8") == text


def test_check_names_wrong_and_stray_metadata(tmp_path, capsys):
    cells = [code(SOLUTION), code(CHECK), code("y = 2")]
    cells[0]["metadata"]["nbgrader"] = {**nbgrader_metadata(cells)[0], "grade_id": "ex9_solution"}
    cells[2]["metadata"]["nbgrader"] = {"grade": True, "grade_id": "old", "points": 2}
    cells[1]["metadata"]["nbgrader"] = nbgrader_metadata(cells)[1]
    path = write_notebook(tmp_path / "09_double.ipynb", cells)
    assert main(["nbgrader-metadata", "--check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "cell 0" in out[0] and "grade_id is 'ex9_solution', wants 'ex09_1_solution'" in out[0]
    assert "cell 2" in out[1] and "is no exercise cell but has nbgrader metadata" in out[1]
    assert write_nbgrader_metadata(path) == 2
    assert "nbgrader" not in _cells(path)[2]["metadata"] and nbgrader_problems(path) == []


@pytest.mark.parametrize("cells, message", [
    ([code("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"), code(CHECK)], "must start with '# Exercise NN.M"),
    ([code(SOLUTION)], "needs a check cell right after it"),
    ([code(SOLUTION), code("print(double(3))")], "needs a check cell right after it"),
    ([code(SOLUTION), code(CHECK), code(SOLUTION), code(CHECK)], "exercise 09.1 again (first in cell 0)"),
])
def test_exercises_nbgrader_cannot_grade_are_refused(cells, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        nbgrader_metadata(cells, where="09_double.ipynb")


def test_command_names_a_missing_notebook(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["nbgrader-metadata", "--check", str(tmp_path / "nope.ipynb")])
    assert "no notebook at" in capsys.readouterr().err


# --- a grading round with nbgrader ------------------------------------------------------------

WRONG = {   # exercise: (a piece of its solution, a mistake learners make there instead, what the check then says)
    "01.1": ("mid = (in_ch + skip_ch) // 2", "mid = out_ch", "middle width should be (in_ch + skip_ch) // 2"),
    "01.2": ("field += (kernel - 1) * span", "field += kernel - 1", "you left the strides out"),
    "02.1": ("return (1 - dice_per_image).mean()", "return dice_per_image.mean()",
             "That is the Dice score; the loss is 1 - Dice"),
    "02.2": ("w0 * np.exp(", "2 * w0 * np.exp(", "The distance term is off by a factor 2"),
    "03.1": ("return 2 * (depthwise + pointwise)", "return depthwise + pointwise", "a multiply-add is 2 FLOPs"),
    "03.2": ("nn.BatchNorm2d(c_out)]", "nn.BatchNorm2d(c_out), nn.ReLU6()]", "the bottleneck must stay linear"),
    "04.1": ("halves_next = i + 1 == len(strides) or strides[i + 1] > 1", "halves_next = strides[i] > 1",
             "Tap the *last* block at each stride"),
    "04.2": ("size=skip.shape[-2:]", "scale_factor=2", "Sizes of tensors must match"),
    "05.1": ("return T**2 * (cross - entropy).mean()", "return (cross - entropy).mean()",
             "Off by a factor 1/T^2 = 1/16"),
    "05.2": ('mode="area"', 'mode="bilinear", align_corners=False', "mode='area'"),
    "06.1": ("torch.logit(x.clamp(1e-3, 1 - 1e-3))", "torch.logit(x)", "Clamp x to [1e-3, 1 - 1e-3]"),
    "06.2": ("10 * torch.log10", "20 * torch.log10", "you have 20 log10(1 / MSE)"),
    "07.1": ("- eager)", "- x)", "compare with model(x)"),
    "07.2": (".clamp(-127, 127) * scale", ".clamp(-127, 127)", "not the integers q"),
}
GRADED = [p for p in WITH_EXERCISES if "01" <= p.name[:2] <= "07"]


def _solutions(cells: list[dict]) -> dict[str, str]:
    """``{exercise: source}`` of the notebook's solution cells, found by their nbgrader metadata."""
    found = {}
    for cell in cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            source = "".join(cell["source"])
            found[EXERCISE.search(source)[1]] = source
    return found


def _wrong(ex: str, source: str) -> str:
    right, wrong, _ = WRONG[ex]
    assert source.count(right) == 1, (f"exercise {ex}: its solution has {source.count(right)} copies of {right!r}; "
                                      f"give WRONG[{ex!r}] a piece that appears once")
    return source.replace(right, wrong)


def test_every_exercise_of_lessons_01_to_07_has_a_wrong_answer():
    solutions = {ex: src for lesson in GRADED for ex, src in _solutions(_cells(lesson)).items()}
    assert [p.name[:2] for p in GRADED] == ["01", "02", "03", "04", "05", "06", "07"]
    assert sorted(solutions) == sorted(WRONG), "every exercise of lessons 01-07 needs a wrong answer in WRONG"
    for ex, source in solutions.items():
        assert _wrong(ex, source) != source


def _nbgrader(cwd: Path, *args: str, timeout: int = 300) -> None:
    """Run the nbgrader command in ``cwd``, with this venv's scripts first on PATH (nbgrader calls alembic)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "MOBILEUNET_FAST": "1",
           "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(cwd / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(cwd / ".runtime")}
    done = subprocess.run([str(bin_dir / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0 and "ERROR" not in done.stderr, f"nbgrader {' '.join(args)}:\n{done.stderr[-4000:]}"


def _exercise_notebook(lesson: Path) -> dict:
    """The lesson's setup cell (the first code cell after the hosted one) and its exercises (task, solution,
    check), outputs cleared: a small assignment."""
    nb = json.loads(lesson.read_text(encoding="utf-8"))
    cells, keep = nb["cells"], []
    first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and c.get("id") not in HOSTED_IDS)
    for i in sorted(nbgrader_metadata(cells)):
        if cells[i]["metadata"]["nbgrader"]["solution"]:
            keep += [i - 1, i] if cells[i - 1]["cell_type"] == "markdown" else [i]
        else:
            keep.append(i)
    nb["cells"] = [cells[i] for i in [first_code, *keep]]
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def _course(root: Path) -> Path:
    """A scratch nbgrader course folder with its exchange; students' folders read the same config."""
    config = (f"c = get_config()\nc.CourseDirectory.course_id = 'mobileunet'\nc.Exchange.root = "
              f"{str(root / 'exchange')!r}\nc.Execute.timeout = 300\n")
    (root / "exchange").mkdir(parents=True)
    for folder in ("course", "right", "wrong"):
        (root / folder).mkdir()
        (root / folder / "nbgrader_config.py").write_text(config)
    return root / "course"


def _answer(folder: Path, student: str) -> None:
    """Fill in the fetched copies in ``folder``: every solution cell gets the solution, or its wrong version."""
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        solutions = _solutions(_cells(REPO / "notebooks" / path.name))
        for cell in nb["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("solution"):
                ex = re.match(r"ex(\d\d)_(\d+)_solution", cell["metadata"]["nbgrader"]["grade_id"])
                ex = f"{ex[1]}.{ex[2]}"
                source = solutions[ex] if student == "right" else _wrong(ex, solutions[ex])
                cell["source"] = source.splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


def _check_outputs(path: Path) -> dict[str, str]:
    """``{grade id: output text}`` of the check cells in an autograded notebook."""
    found = {}
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id", "")
        if grade_id.endswith("_check"):
            found[grade_id] = "".join("".join(o.get("text", "")) + "".join(o.get("evalue", ""))
                                      + "".join(o.get("traceback", [])) for o in cell["outputs"])
    return found


@pytest.mark.slow
def test_nbgrader_releases_the_lessons_and_grades_every_exercise(tmp_path):
    pytest.importorskip("nbgrader", reason="nbgrader is in the `grading` extra: `bash course.sh test` and "
                                           "`bash course.sh grading-test` install it")
    from nbgrader.api import Gradebook

    course = _course(tmp_path)
    (course / "source" / "lessons").mkdir(parents=True)
    (course / "source" / "exercises").mkdir()
    for lesson in GRADED:
        (course / "source" / "lessons" / lesson.name).write_bytes(lesson.read_bytes())
        (course / "source" / "exercises" / lesson.name).write_text(
            json.dumps(_exercise_notebook(lesson), indent=1, ensure_ascii=False), encoding="utf-8")
    _nbgrader(course, "generate_assignment", "lessons", "--force")
    for lesson in GRADED:
        released = (course / "release" / "lessons" / lesson.name).read_text(encoding="utf-8")
        assert BEGIN not in released and released.count("raise NotImplementedError()") >= 2, lesson.name
        assert '"output_type"' not in released, f"{lesson.name}: the released copy keeps outputs"

    _nbgrader(course, "generate_assignment", "exercises", "--force")
    _nbgrader(course, "release_assignment", "exercises", "--force")
    for student in ("right", "wrong"):
        _nbgrader(tmp_path / student, "fetch_assignment", "exercises")
        _answer(tmp_path / student / "exercises", student)
        _nbgrader(tmp_path / student, "submit", "exercises", f"--student={student}")
    _nbgrader(course, "collect", "exercises")
    _nbgrader(course, "autograde", "exercises", "--force", timeout=1200)

    checks = {f"ex{ex.replace('.', '_')}_check": ex for ex in WRONG}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert gradebook.find_assignment("exercises").max_score == len(checks)       # a point per exercise
        points = {student: {g.name: g.score for nb in gradebook.find_submission("exercises", student).notebooks
                            for g in nb.grades} for student in ("right", "wrong")}
    assert points["right"] == dict.fromkeys(checks, 1.0)
    assert points["wrong"] == dict.fromkeys(checks, 0.0)
    graded = {}
    for lesson in GRADED:                                   # the learner reads what was wrong, exercise by exercise
        graded.update(_check_outputs(course / "autograded" / "wrong" / "exercises" / lesson.name))
    missing = {ex: WRONG[ex][2] for grade_id, ex in checks.items() if WRONG[ex][2] not in graded[grade_id]}
    assert not missing, f"the graded notebooks do not say what was wrong: {missing}"
