"""The hosted set-up cell (``nbtools hosted-cell``): in every lesson, a no-op locally, an install on Colab.

Colab cannot run here. What can be checked: every lesson carries the cells
as the command writes them; run locally the cell starts nothing; with a fake
``google.colab`` module and ``subprocess.run`` patched to record, it clones
the course and installs it with torch and torchvision held at the versions
present; and, with a network, pip's dry run of that very command installs
neither torch nor torchvision.
"""
import json
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mobileunet.nbtools import HOSTED_IDS, HOSTED_REPO, hosted_cells, main, with_hosted_cells, write_hosted_cells

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CODE = "".join(hosted_cells("00_setup_and_tour.ipynb")[1]["source"])


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem[:2] for p in LESSONS])
def test_every_lesson_opens_with_its_badges_and_hosted_cell(path):
    cells = _cells(path)
    assert [c.get("id") for c in cells[1:3]] == list(HOSTED_IDS), (
        f"fix: .venv/bin/python -m mobileunet.nbtools hosted-cell notebooks/{path.name}")
    assert not write_hosted_cells(path, check=True), f"old hosted cells: re-run nbtools hosted-cell {path.name}"
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    assert cells[2]["outputs"] == [], "the hosted cell keeps no outputs"
    assert f"notebooks/{path.name}" in "".join(cells[1]["source"])


def test_readme_badges_and_the_cell_name_one_repository():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"colab.research.google.com/github/{HOSTED_REPO}/" in readme
    assert f"mybinder.org/v2/gh/{HOSTED_REPO}/" in readme
    assert f"https://github.com/{HOSTED_REPO}" in CODE


def _forbid(*args, **kwargs):
    raise AssertionError(f"the hosted cell started a process outside a hosted kernel: {args}")


def test_cell_does_nothing_locally(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for name in ("run", "Popen", "call", "check_call"):
        monkeypatch.setattr(subprocess, name, _forbid)
    before = list(sys.path)
    exec(compile(CODE, "<hosted cell>", "exec"), {"__name__": "__main__"})
    assert sys.path == before


def test_cell_does_nothing_on_colab_once_the_course_is_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", _forbid)
    exec(compile(CODE, "<hosted cell>", "exec"), {"__name__": "__main__"})   # mobileunet is importable here


def _run_as_if_on_colab(monkeypatch, root: Path) -> list[list[str]]:
    """Run the cell with ``google.colab`` imported and the course not installed; the commands it would run."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mobileunet"
                        else find_spec(name, *a))
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: ran.append(list(cmd)) or
                        subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(CODE.replace('"/content/', f'"{root}/'), "<hosted cell>", "exec"), {"__name__": "__main__"})
    assert sys.path[0] == str(root / "mobileunet"), "the running kernel must find the course it installed"
    return ran


def test_cell_on_colab_clones_and_installs_keeping_torch(monkeypatch, tmp_path):
    from importlib.metadata import version

    clone, install = _run_as_if_on_colab(monkeypatch, tmp_path)
    assert clone == ["git", "clone", "-q", "--depth", "1", f"https://github.com/{HOSTED_REPO}",
                     str(tmp_path / "mobileunet")]
    keep = tmp_path / "keep-torch.txt"
    assert install == [sys.executable, "-m", "pip", "install", "-q", "-c", str(keep), "-e",
                       str(tmp_path / "mobileunet")]
    assert keep.read_text() == f"torch=={version('torch')}\ntorchvision=={version('torchvision')}\n"


def test_cell_on_colab_skips_the_clone_it_already_made(monkeypatch, tmp_path):
    (tmp_path / "mobileunet").mkdir()
    (install,) = _run_as_if_on_colab(monkeypatch, tmp_path)
    assert install[:4] == [sys.executable, "-m", "pip", "install"]


@pytest.mark.slow
def test_the_cells_pip_command_reinstalls_no_torch(monkeypatch, tmp_path):
    """pip's dry run of the cell's own command, with this repository as the clone: torch stays as installed."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        pytest.skip("cannot reach pypi.org: pip needs it to build the course's metadata (setuptools)")
    (clone, install), report = _run_as_if_on_colab(monkeypatch, tmp_path), tmp_path / "report.json"
    monkeypatch.undo()
    command = [str(REPO) if arg == clone[-1] else arg for arg in install]
    done = subprocess.run([*command, "--dry-run", "--report", str(report)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"pip could not resolve the hosted install:\n{done.stderr[-3000:]}"
    installs = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "mobileunet" in installs and not installs & {"torch", "torchvision"}, installs


def test_command_is_idempotent_and_replaces_old_cells(tmp_path, capsys):
    title = {"cell_type": "markdown", "id": "t", "metadata": {}, "source": ["# 09 · A lesson"]}
    body = {"cell_type": "code", "execution_count": 3, "id": "b", "metadata": {}, "outputs": [], "source": ["1"]}
    stale = {**hosted_cells("09_x.ipynb")[1], "source": ["# an older set-up cell"]}
    path = tmp_path / "09_x.ipynb"
    path.write_text(json.dumps({"cells": [title, stale, body], "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}), encoding="utf-8")
    assert main(["hosted-cell", "--check", str(path)]) == 1
    assert "hosted cells missing or old" in capsys.readouterr().out
    assert main(["hosted-cell", str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    assert _cells(path) == [title, *hosted_cells("09_x.ipynb"), body]
    assert main(["hosted-cell", "--check", str(path)]) == 0
    assert not write_hosted_cells(path) and path.read_text(encoding="utf-8") == text
    ran = json.loads(text)
    ran["cells"][2].update(execution_count=1, metadata={"execution": {"shell.execute_reply": "2026-12-01"}})
    path.write_text(json.dumps(ran), encoding="utf-8")
    assert not write_hosted_cells(path, check=True)              # a full-mode run's count and timestamps are fine
    ran["cells"][2]["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["x\n"]}]
    path.write_text(json.dumps(ran), encoding="utf-8")
    assert write_hosted_cells(path) and _cells(path)[2]["outputs"] == []


def test_notebook_without_a_title_gets_the_cells_first():
    body = {"cell_type": "code", "id": "b", "metadata": {}, "outputs": [], "source": ["1"]}
    nb = with_hosted_cells({"cells": [body], "metadata": {}}, "09_x.ipynb")
    assert [c["id"] for c in nb["cells"]] == [*HOSTED_IDS, "b"]


def test_a_repository_that_is_no_owner_name_is_refused():
    with pytest.raises(ValueError, match="is not a GitHub owner/name"):
        hosted_cells("09_x.ipynb", repo="https://github.com/me/mobileunet")
