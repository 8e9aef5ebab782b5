"""The lessons as nbgrader source notebooks: their metadata (``nbtools nbgrader-metadata``) and a grading round.

The metadata tests need only the package. The round trip needs nbgrader (the
``grading`` extra; ``bash course.sh grading-test`` installs it and runs this
file): it releases the lessons in a scratch course folder, then grades two
submissions of lesson 03's exercises, one with the solutions and one with a
wrong answer, and reads the points from nbgrader's gradebook.
"""
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mobileunet.nbtools import (BEGIN, END, HOSTED_IDS, main, nbgrader_metadata, nbgrader_problems,
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

WRONG_03_1 = "    return 2 * c_in * c_out * k * k * h * w            # a standard conv at full size\n"


def _nbgrader(course: Path, *args: str) -> None:
    """Run the nbgrader command in ``course``, with this venv's scripts first on PATH (nbgrader calls alembic)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "MOBILEUNET_FAST": "1",
           "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(course / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(course / ".runtime")}
    done = subprocess.run([str(bin_dir / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=300)
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


def _replace_solution(source: list[str], body: str) -> list[str]:
    """The cell's lines with its (only) solution region replaced by ``body``."""
    text = "".join(source)
    start, end = text.index(BEGIN), text.index(END) + len(END)
    start, end = text.rindex("\n", 0, start) + 1, text.index("\n", end) + 1 if "\n" in text[end:] else len(text)
    return (text[:start] + body + text[end:]).splitlines(keepends=True)


@pytest.mark.slow
def test_nbgrader_releases_the_lessons_and_grades_a_submission(tmp_path):
    pytest.importorskip("nbgrader", reason="nbgrader is in the `grading` extra: `bash course.sh grading-test` "
                                           "installs it and runs this test")
    course = tmp_path / "course"
    (course / "source" / "lessons").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'mobileunet'\nc.Execute.timeout = 300\n")
    ready = [p for p in WITH_EXERCISES if not nbgrader_problems(p)]      # the others fail the test above
    for lesson in ready:
        (course / "source" / "lessons" / lesson.name).write_bytes(lesson.read_bytes())
    _nbgrader(course, "generate_assignment", "lessons", "--force")
    for lesson in ready:
        released = (course / "release" / "lessons" / lesson.name).read_text(encoding="utf-8")
        assert BEGIN not in released and released.count("raise NotImplementedError()") >= 2, lesson.name
        assert '"output_type"' not in released, f"{lesson.name}: the released copy keeps outputs"

    lesson = REPO / "notebooks" / "03_mobilenet_blocks.ipynb"
    nb = _exercise_notebook(lesson)
    (course / "source" / "ex03").mkdir()
    (course / "source" / "ex03" / "exercises.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    _nbgrader(course, "generate_assignment", "ex03", "--force")
    for student, wrong in (("right", False), ("wrong", True)):
        submission = json.loads(json.dumps(nb))
        if wrong:
            cell = next(c for c in submission["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id")
                        == "ex03_1_solution")
            cell["source"] = _replace_solution(cell["source"], WRONG_03_1)
        folder = course / "submitted" / student / "ex03"
        folder.mkdir(parents=True)
        (folder / "exercises.ipynb").write_text(json.dumps(submission, indent=1, ensure_ascii=False))
    _nbgrader(course, "autograde", "ex03", "--force")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        points = {student: {g.name: g.score for g in
                            gradebook.find_submission_notebook("exercises", "ex03", student).grades}
                  for student in ("right", "wrong")}
    assert points["right"] == {"ex03_1_check": 1.0, "ex03_2_check": 1.0}
    assert points["wrong"] == {"ex03_1_check": 0.0, "ex03_2_check": 1.0}
    graded = (course / "autograded" / "wrong" / "ex03" / "exercises.ipynb").read_text(encoding="utf-8")
    assert "CheckFailed" in graded and "That is a standard conv" in graded    # the learner reads the mistake
