"""Run-time set-up: the FAST flag, seeding, device choice, environment report."""
import json

import pytest
import torch

from mobileunet import env
from mobileunet.nbtools import strip_widgets
from mobileunet.tables import format_table


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_fast_flag_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("MOBILEUNET_FAST", value)
    assert env.fast_mode() is expected


def test_set_seed_repeats_random_draws():
    env.set_seed(3)
    a = torch.rand(3)
    env.set_seed(3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(TypeError, match="seed"):
        env.set_seed("3")


def test_device_helper():
    assert env.get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            env.get_device("cuda")
    assert "torch" in env.env_report(torch.device("cpu"))


def test_environment_check_lists_every_course_package():
    rows = env.check_environment()
    assert [r["package"] for r in rows] == [p for p, _, _ in env.COURSE_PACKAGES]
    assert all(r["status"] == "ok" for r in rows if r["package"] in ("torch", "numpy"))


def test_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILEUNET_DATA", str(tmp_path))
    assert env.data_dir() == tmp_path


def test_strip_widgets_keeps_outputs(tmp_path):
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "text": "hi"}]}],
          "metadata": {"widgets": {"state": {}}, "kernelspec": {}}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    strip_widgets(path)
    out = json.loads(path.read_text())
    assert "widgets" not in out["metadata"] and out["cells"] == nb["cells"]


def test_format_table_aligns_columns():
    text = format_table([{"a": 1, "b": 0.5}, {"a": 123456, "b": 2.0}])
    lines = text.splitlines()
    assert lines[0] == "| a       | b     |"
    assert "123,456" in lines[3] and len({len(line) for line in lines}) == 1


def test_every_lesson_names_the_kernel_the_set_up_registers():
    """One kernelspec for all lessons: "mobileunet", which course.sh, binder/postBuild and environment.yml's
    note register; a learner picks it once."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    names = {nb.name: json.loads(nb.read_text())["metadata"].get("kernelspec", {}).get("name")
             for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
    assert set(names.values()) == {"mobileunet"}, names
    assert "--name mobileunet" in (root / "course.sh").read_text()


def test_strip_widgets_turns_a_widgets_repr_into_a_note_and_no_stored_lesson_shows_one(tmp_path):
    from pathlib import Path

    from mobileunet.nbtools import WIDGET_NOTE

    view = {"output_type": "display_data", "metadata": {},
            "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                     "text/plain": ["VBox(children=(FloatSlider(value=0.5),))"]}}
    nb = {"cells": [{"cell_type": "code", "outputs": [view]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    strip_widgets(path)
    assert json.loads(path.read_text())["cells"][0]["outputs"][0]["data"]["text/plain"] == [WIDGET_NOTE]
    for lesson in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = lesson.read_text()
        assert "VBox(children=" not in text and "HBox(children=" not in text, lesson.name


def test_write_results_writes_both_files_whole_and_prints(tmp_path, capsys):
    from mobileunet.tables import write_results

    out = {"command": "python benchmarks/x.py", "rows": [{"a": 1.5}]}
    write_results(tmp_path / "results", "x", out, "# x\n\n| a |\n")
    assert json.loads((tmp_path / "results" / "x.json").read_text()) == out
    assert (tmp_path / "results" / "x.md").read_text() == "# x\n\n| a |\n"
    assert capsys.readouterr().out == "# x\n\n| a |\n\n"
    write_results(tmp_path / "results", "x", {"rows": []}, "# y\n", echo="the table")
    assert capsys.readouterr().out == "the table\n" and sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "x.json", "x.md"]
