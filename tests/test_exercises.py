"""The exercises of lessons 01-07 (``mobileunet.checks``) and their student copies (``nbtools``).

Exercises are read from the notebooks (cells holding ``### BEGIN SOLUTION``):
each solution passes its check, and its student stub fails it with "not done
yet". Deliberately wrong answers get a message that names the mistake.
``MOBILEUNET_NOTEBOOKS=DIR`` reads the exercises from another folder.
"""
import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobileunet import checks
from mobileunet.blocks import InvertedResidual
from mobileunet.checks import CheckFailed
from mobileunet.data import border_weight_map
from mobileunet.distill import soft_target_kl
from mobileunet.layers import DoubleConv, Up
from mobileunet.nbtools import BEGIN, EXERCISE, main, stub_solutions

NOTEBOOKS = Path(os.environ.get("MOBILEUNET_NOTEBOOKS", Path(__file__).parents[1] / "notebooks"))


def notebook_exercises(folder: Path = NOTEBOOKS) -> list[tuple[str, str, str]]:
    """``(id, solution source, check source)`` for every solution cell, in course order."""
    found = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        for i, src in enumerate(cells):
            if BEGIN in src:
                task = EXERCISE.search(src)
                found.append((task[1] if task else f"{path.name} cell {i}", src,
                              cells[i + 1] if i + 1 < len(cells) else ""))
    return found


EXERCISES = notebook_exercises()


def run_cells(*sources: str) -> dict:
    """Execute notebook cells in one fresh namespace, as a kernel would."""
    namespace = {"__name__": "__main__"}
    for src in sources:
        exec(compile(src, "<cell>", "exec"), namespace)
    return namespace


def test_lessons_01_to_07_have_two_exercises_each():
    per_lesson = {f"{n:02d}": [e for e, _, _ in EXERCISES if e.startswith(f"{n:02d}.")] for n in range(1, 8)}
    assert all(len(found) >= 2 for found in per_lesson.values()), (
        f"exercises per lesson in {NOTEBOOKS}: {per_lesson}")
    assert sorted(e for e, _, _ in EXERCISES) == sorted(checks.EXERCISES)


@pytest.mark.parametrize("ex, solution, check", EXERCISES, ids=[e for e, _, _ in EXERCISES])
def test_check_cell_follows_its_solution(ex, solution, check):
    assert check.startswith("# NBVAL_CHECK_OUTPUT\n") and "from mobileunet.checks import check_" in check
    assert ex in checks.EXERCISES, f"{ex} has no title in mobileunet.checks.EXERCISES"


@pytest.mark.parametrize("ex, solution, check", EXERCISES, ids=[e for e, _, _ in EXERCISES])
def test_solution_passes_its_check(ex, solution, check, capsys):
    run_cells(solution, check)
    assert capsys.readouterr().out.startswith(f"✓ {ex} {checks.EXERCISES[ex]}: ")


@pytest.mark.parametrize("ex, solution, check", EXERCISES, ids=[e for e, _, _ in EXERCISES])
def test_student_stub_is_reported_not_done(ex, solution, check):
    student = stub_solutions(solution)
    assert BEGIN not in student and f'raise NotImplementedError("your turn: exercise {ex} — ' in student
    with pytest.raises(CheckFailed, match=f"exercise {ex} is not done yet: fill in the cell above"):
        run_cells(student, check)


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    checks.check_receptive_field(_field)
    assert torch.equal(torch.rand(3), expected)


def _field(layers):
    field, span = 1, 1
    for k, s in layers:
        field, span = field + (k - 1) * span, span * s
    return field


# --- wrong answers get named -----------------------------------------------------------------


class UpNoPad(Up):
    def __init__(self, in_ch, skip_ch, out_ch):
        super().__init__(in_ch, skip_ch, out_ch, mode="bilinear")

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UpMidOut(Up):
    def __init__(self, in_ch, skip_ch, out_ch):
        super().__init__(in_ch, skip_ch, out_ch, mode="bilinear")
        self.conv = DoubleConv(in_ch + skip_ch, out_ch)


def v2_block(relu_after_project=False, residual=True, always_expand=False):
    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride=1, t=6):
            super().__init__()
            h = c_in * t
            expand = ([nn.Conv2d(c_in, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6()]
                      if t != 1 or always_expand else [])
            self.layers = nn.Sequential(*expand, nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False),
                                        nn.BatchNorm2d(h), nn.ReLU6(), nn.Conv2d(h, c_out, 1, bias=False),
                                        nn.BatchNorm2d(c_out), *([nn.ReLU6()] if relu_after_project else []))
            self.residual = residual and stride == 1 and c_in == c_out

        def forward(self, x):
            return x + self.layers(x) if self.residual else self.layers(x)
    return Block


def decoder_block(v2_hidden=False, scale_factor=False):
    class Block(nn.Module):
        def __init__(self, in_ch, skip_ch, out_ch, expand=4):
            super().__init__()
            self.block = InvertedResidual(in_ch + skip_ch, out_ch,
                                          (in_ch + skip_ch if v2_hidden else out_ch) * expand)

        def forward(self, x, skip):
            x = F.interpolate(x, **({"scale_factor": 2} if scale_factor else {"size": skip.shape[-2:]}),
                              mode="bilinear", align_corners=False)
            return self.block(torch.cat([x, skip], dim=1))
    return Block


def hint_adapter(kernel=1, resize=True, shrink_mode="area"):
    class Adapter(nn.Module):
        def __init__(self, s_ch, t_ch):
            super().__init__()
            self.conv = nn.Conv2d(s_ch, t_ch, kernel, padding=kernel // 2)

        def forward(self, s, t):
            if resize and t.shape[-1] > s.shape[-1]:
                t = F.interpolate(t, size=s.shape[-2:], mode=shrink_mode)
            elif resize:
                t = F.interpolate(t, size=s.shape[-2:], mode="bilinear", align_corners=False)
            return self.conv(s), t
    return Adapter


def _out(h, s):
    return (h - 1) // s + 1


def _dice_score(logits, mask, sigmoid=True):
    p, t = (torch.sigmoid(logits) if sigmoid else logits).flatten(1), mask.flatten(1)
    return ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def _no_export(model, x, path):
    return 0.0


WRONG = [
    (checks.check_up_bilinear, lambda i, s, o: Up(i, s, o, mode="transpose"), "transposed-conv Up"),
    (checks.check_up_bilinear, UpMidOut, "middle width should be (in_ch + skip_ch) // 2"),
    (checks.check_up_bilinear, UpNoPad, "the skip's exact size first"),
    (checks.check_receptive_field, lambda layers: 1 + sum(k - 1 for k, _ in layers), "you left the strides out"),
    (checks.check_receptive_field, lambda layers: _field(layers) - 1, "Start from 1"),
    (checks.check_dice_loss, _dice_score, "That is the Dice score; the loss is 1 - Dice"),
    (checks.check_dice_loss, lambda z, m: 1 - _dice_score(z, m, sigmoid=False),
     "Apply torch.sigmoid to the logits first"),
    (checks.check_dice_loss, lambda z, m: 1 - _dice_score(z, m).item(), "drop .item()"),
    (checks.check_border_weights, lambda lab, w0, s: border_weight_map(lab, w0, s)
     - border_weight_map((lab > 0).astype(int)), "The class-balance term w_c is missing"),
    (checks.check_border_weights, lambda lab, w0, s: border_weight_map(lab, 2 * w0, s),
     "The distance term is off by a factor 2"),
    (checks.check_separable_flops, lambda ci, co, k, h, w, s: (k * k * ci + ci * co) * _out(h, s) * _out(w, s),
     "a multiply-add is 2 FLOPs"),
    (checks.check_separable_flops, lambda ci, co, k, h, w, s: 2 * (k * k * ci + ci * co) * h * w,
     "both convs run on the smaller output map"),
    (checks.check_separable_flops, lambda ci, co, k, h, w, s: 2 * k * k * ci * co * _out(h, s) * _out(w, s),
     "That is a standard conv's cost"),
    (checks.check_v2_block, v2_block(relu_after_project=True), "the bottleneck must stay linear"),
    (checks.check_v2_block, v2_block(residual=False), "add the input"),
    (checks.check_v2_block, v2_block(always_expand=True), "with t = 1 there is nothing to expand"),
    (checks.check_tap_indices, lambda st: tuple(int(np.argmax(np.cumprod(st) == s)) for s in (2, 4, 8, 16, 32)),
     "Tap the *last* block at each stride"),
    (checks.check_decoder_block, decoder_block(v2_hidden=True), "hidden = out_ch * expand"),
    (checks.check_decoder_block, decoder_block(scale_factor=True), "the skip's exact size first"),
    (checks.check_kd_loss, lambda s, t, T: soft_target_kl(s, t, T) / T**2, "Off by a factor 1/T^2 = 1/16"),
    (checks.check_kd_loss, lambda s, t, T: soft_target_kl(s, t, T) * T**2, "Off by a factor T^2"),
    (checks.check_kd_loss, lambda s, t, T: soft_target_kl(t, s, T), "The KL goes from the teacher to the student"),
    (checks.check_kd_loss, lambda s, t, T: T**2 * F.binary_cross_entropy_with_logits(s / T, torch.sigmoid(t / T)),
     "That is the cross-entropy"),
    (checks.check_hint_adapter, hint_adapter(kernel=3), "the adapter is a 1x1 conv"),
    (checks.check_hint_adapter, hint_adapter(resize=False), "resize it to the student's size"),
    (checks.check_hint_adapter, hint_adapter(shrink_mode="bilinear"), "mode='area'"),
    (checks.check_residual_output, lambda x, y: torch.sigmoid(torch.logit(x) + y), "Clamp x to [1e-3, 1 - 1e-3]"),
    (checks.check_residual_output, lambda x, y: torch.sigmoid(x + y), "Add in logit space"),
    (checks.check_psnr, lambda p, t: 10 * torch.log10(1 / (p - t).pow(2).mean()), "one PSNR per image"),
    (checks.check_psnr, lambda p, t: 20 * torch.log10(1 / (p - t).pow(2).flatten(1).mean(1)),
     "you have 20 log10(1 / MSE)"),
    (checks.check_onnx_parity, _no_export, "no file at the path you were given"),
    (checks.check_int8_weights,
     lambda w: torch.fake_quantize_per_tensor_affine(w, float(w.abs().max()) / 127, 0, -127, 127),
     "One scale per output channel"),
    (checks.check_int8_weights, lambda w: (w / (w.abs().amax((1, 2, 3), keepdim=True) / 127)).round(),
     "not the integers q"),
]


@pytest.mark.parametrize("check, wrong, message", WRONG,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(WRONG)])
def test_wrong_answer_is_named(check, wrong, message):
    with pytest.raises(CheckFailed) as err:
        check(wrong)
    assert message in str(err.value)


# --- student copies --------------------------------------------------------------------------


SOLUTION = '''# Exercise 09.1: write Twice, a module that doubles its input
from torch import nn


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        ### BEGIN SOLUTION
        self.factor = 2
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        return self.factor * x
        ### END SOLUTION'''
CHECK = '''# NBVAL_CHECK_OUTPUT
from mobileunet.checks import _call

print(_call("01.1", lambda: Twice()(3)))'''


def test_student_copies_stub_solutions_and_clear_outputs(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    out = [nbformat.v4.new_output("stream", name="stdout", text="6\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("### Exercise 09.1"),
                nbformat.v4.new_code_cell(SOLUTION, execution_count=3, outputs=out,
                                          metadata={"execution": {"shell.execute_reply": "x"}}),
                nbformat.v4.new_code_cell(CHECK, execution_count=4, outputs=out)]
    (tmp_path / "lessons").mkdir()
    src = tmp_path / "lessons" / "09_twice.ipynb"
    nbformat.write(nb, src)
    run_cells(SOLUTION, CHECK)
    assert capsys.readouterr().out == "6\n"

    assert main(["student-copies", "--out", str(tmp_path / "student"), str(src)]) == 0
    assert "1 exercise cell(s) stubbed" in capsys.readouterr().out
    copy = nbformat.read(tmp_path / "student" / src.name, as_version=4)
    md, solution, check = copy.cells
    assert md.source == "### Exercise 09.1" and check.source == CHECK
    assert all(c.outputs == [] and c.execution_count is None for c in (solution, check))
    assert "widgets" not in copy.metadata and "execution" not in solution.metadata
    stub = ('        raise NotImplementedError("your turn: exercise 09.1 — '
            'write Twice, a module that doubles its input")')
    assert solution.source.count(stub) == 2 and BEGIN not in solution.source
    assert "    def forward(self, x):" in solution.source and "self.factor" not in solution.source
    with pytest.raises(CheckFailed, match="exercise 01.1 is not done yet"):
        run_cells(solution.source, check.source)
    with pytest.raises(SystemExit):
        main(["student-copies", "--out", str(tmp_path / "lessons"), str(src)])
    assert "the lessons' own folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["student-copies", "--out", str(tmp_path / "lessons" / "sub"), str(src)])   # inside it
    assert "inside the lessons' own folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):                                             # a second run does not overwrite
        main(["student-copies", "--out", str(tmp_path / "student"), str(src)])
    assert "use --force" in capsys.readouterr().err
    assert main(["student-copies", "--out", str(tmp_path / "student"), str(src), "--force"]) == 0


def test_student_copies_are_all_or_nothing(tmp_path, capsys):
    good = nbformat.v4.new_notebook()
    good.cells = [nbformat.v4.new_code_cell(SOLUTION)]
    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\nx = 2")]       # never closed
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    nbformat.write(good, lessons / "01_good.ipynb")
    nbformat.write(bad, lessons / "02_bad.ipynb")
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["student-copies", "--out", str(out), str(lessons / "01_good.ipynb"), str(lessons / "02_bad.ipynb")])
    assert "never closed" in capsys.readouterr().err
    assert not list(out.glob("*.ipynb"))                                         # the good one was not written


@pytest.mark.parametrize("line", ["### BEGIN SOLUTION (part a)", "x = 1  ### BEGIN SOLUTION", "### begin solution",
                                  "# END SOLUTION"])
def test_near_miss_markers_are_refused(line):
    with pytest.raises(ValueError, match="looks like a solution marker"):
        stub_solutions(f"def f():\n    {line}\n    return 1")


def test_unbalanced_solution_markers_are_refused():
    with pytest.raises(ValueError, match="never closed"):
        stub_solutions("def f():\n    ### BEGIN SOLUTION\n    return 1")
    with pytest.raises(ValueError, match="without a ### BEGIN SOLUTION"):
        stub_solutions("def f():\n    return 1\n    ### END SOLUTION")


@pytest.mark.parametrize("cell", [
    ("code", "def f():\n    ### begin solution\n    return 1\n    ### end solution"),
    ("code", "def f():\n    ## BEGIN SOLUTION\n    return 1"),
    ("code", "def f():\n    ### BEGIN_SOLUTION\n    return 1"),
    ("code", "def f():\n    return 1\n    ### END SOLUTION"),
    ("code", "def f():\n    ###\u00a0BEGIN SOLUTION\n    return 1"),
    ("code", "### BEGIN HIDDEN TESTS\nassert f() == 1\n### END HIDDEN TESTS"),
    ("markdown", "### BEGIN SOLUTION\nthe answer is 42\n### END SOLUTION"),
    ("raw", "### BEGIN SOLUTION\n42\n### END SOLUTION"),
])
def test_a_student_copy_never_keeps_an_answer_behind_a_near_miss_marker(cell, tmp_path):
    """Whatever cell a marker-like line sits in, the copy is refused rather than written with the answer."""
    import nbformat

    from mobileunet.nbtools import student_copy

    kind, source = cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [{"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                 "raw": nbformat.v4.new_raw_cell}[kind](source)]
    nbformat.write(nb, tmp_path / "01_x.ipynb")
    with pytest.raises(ValueError, match="solution marker|without a ### BEGIN"):
        student_copy(tmp_path / "01_x.ipynb", tmp_path / "copy.ipynb")
    assert not (tmp_path / "copy.ipynb").exists()
