"""The numbers README.md quotes agree with the output that produced them.

Each row of ``QUOTED`` names one number twice: where it comes from (a notebook
cell's stored output, found by a substring unique to the cell's source, or a
section of a file: a results file under ``benchmarks/results/``, a checkpoint's
manifest under ``data/checkpoints/``) and where README.md quotes it. Each is
found by a regular expression whose first group is the number; both must match
exactly once, so a row never silently reads the wrong figure. The README
may round: it agrees when the source, rounded half-up to the README's decimals,
gives the README's number.

A new quoted number is one more row. For a notebook:
``Q("05_knowledge_distillation.ipynb", "<unique text of the cell's source>", r"<regex in its output>",
r"<regex in README.md>")``; for a results file, the file's path under the
repository root instead of the notebook, and the heading of the section (or
``None``) instead of the cell.
"""
from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NUM = r"(-?[\d,]*\.?\d+)"
"""A number as the notebooks print it (``0.967``, ``1,942,289``, ``22.1``)."""
SCI = r"\+?(-?\d*\.?\d+(?:e[-+]?\d+)?)"
"""A number that may carry a sign or an exponent (``1.29e-05``, ``+0.03``)."""


class Q(NamedTuple):
    source: str            # a notebook in notebooks/, or a file path relative to the repository root
    cell: str | None       # a substring unique to the cell's source; for a results file, the heading of
                           # its section that holds the number (None: the whole file)
    in_source: str         # regex whose first group is the number in the cell's output (or the file)
    in_readme: str         # regex whose first group is the number in README.md
    unit: int | Decimal = 1  # the README quotes the number in these units (10**6: "7.8 M params";
                           # PER_CENT: a share printed as 0.110 and quoted as 11%; 60: seconds as minutes)


L02, L04 = "02_training_a_unet.ipynb", "04_mobile_unet.ipynb"
LOSS_TABLE = 'print_table([{"loss": name, "val IoU": s["iou"]'
ABLATION = "no_skip_hist = train(no_skip"
TEACHER = "teacher_hist = train(teacher"
COST = "flops256 = {name: count_flops(m, x256)"
RESULTS = 'results = [{"model": name, "val IoU": s["iou"]'
CHOICE = 'd, t = "V3-Small w1.0 (default)", "UNet teacher (base 32)"'
L06, L08 = "06_distilling_an_effect.ipynb", "08_real_time_pipeline.ipynb"
SCORES, SPEED = "scores = evaluate_effect(shipped, val_pairs)", "speed = speed_comparison(shipped, frame"
DEADLINES = 'print_table(deadline_table(runs).rows, floatfmt=".3g")'
AMDAHL, SCHEDULES = 'print(f"model stage: the teacher takes', "schedule_runs = run_pipelines(schedules"
CELLS = "cell_runs = run_pipelines("
MODELS_MD = "benchmarks/results/models.md"
L05 = "05_knowledge_distillation.ipynb"
REGIME_ROWS = (("clean labels", "clean labels (240 images)"),
               ("noisy labels", "noisy labels (30% of cells missed, outlines grown 0-2 px)"),
               ("few labels", "few labels (2 labelled, 238 teacher-labelled)"))
"""Lesson 05's regimes: as the notebook's map names them, then README's table."""
MAP, RUNS = "main_map = [s for s in summary", "rows = run_jobs(jobs, shared, workers=WORKERS)"
SWEEP, LONG = 'sweep = [s for s in summary if s["regime"] == "noisy labels"', 'columns=["recipe", "steps", "IoU"'
UNIFORM, UNSURE = '"instance F1", "F1 change", "gap closed"]', "pixels where the teacher's probability is between"
TEACHER_JSON, STUDENT_JSON = "data/checkpoints/unet_teacher_cells.json", "data/checkpoints/student_cells.json"
PER_CENT = Decimal("0.01")
L07 = "07_on_device_export.ipynb"
TABLE07, SPEEDUP = 'print(f"{name}, {FRAME}x{FRAME}, batch 1;', "et_speedup = ms["
INT8_FILES = 'pte_int8 = export(model, out_dir / "model_int8.pte"'
THREADS, TILED = "cross.append(", "single = CellsDataset("
RUNTIMES = (("eager PyTorch", "fp32", "eager PyTorch", "fp32"), ("ONNX Runtime", "fp32", "ONNX Runtime", "fp32"),
            ("ONNX Runtime", "int8", "ONNX Runtime (QDQ)", "int8"),
            ("ExecuTorch", "fp32", "ExecuTorch / XNNPACK", "fp32"),
            ("ExecuTorch", "int8", "ExecuTorch / XNNPACK (PT2E)", "int8"),
            ("ExecuTorch", "fp32, nearest", "ExecuTorch, nearest upsampling", "fp32"))
"""Lesson 07's table rows: (runtime, precision) in the notebook, then as README names them."""
SELFIE_SUMMARY = "## Summary (1 thread, 256x256; ms: median of the passes' medians; IoU: mean over seeds)"
SELFIE_RATIOS = "## Ratios of medians across passes"
AT_256, VS = "## 256x256", "## The default student, 256x256, ONNX Runtime"


def row(label: str, column: int, *more: str, num: str = NUM) -> str:
    """A markdown table row starting with ``label`` (and the cells ``more``, in order): the number in its
    ``column``-th cell after them."""
    cells = "".join(r"\|\s*" + re.escape(c) + r"\s*" for c in (label, *more)) + r"\|"
    return cells + r"[^|\n]*\|" * (column - 1) + r"\s*" + num + r"\s*\|"



def deadline_row(label: str, column: int) -> str:
    """Like ``row``, in a deadline table (frames and six timings or shares after the label), so that a stage
    table printed by the same cell, whose rows have more cells, never matches."""
    return (r"\|\s*" + re.escape(label) + r"\s*\|" + r"[^|\n]*\|" * (column - 1) + r"\s*" + NUM + r"\s*\|"
            + r"[^|\n]*\|" * (7 - column) + r"\s*$")

def below(header: str, pattern: str) -> str:
    """``pattern`` in the first table after the line holding ``header``: a cell that prints two tables with
    the same row labels (lesson 05's map, on IoU and on instance F1) names which one."""
    return header + r"[^\n]*\n(?:[^\n]*\n)*?" + pattern


IOU_MAP, F1_MAP = r"\| IoU\s+\| IoU min", r"\| instance F1 \| F1 min"


def readme_regime(label: str, column: int, part: int) -> str:
    """README's lesson 05 table: in the row ``label``, column ``column`` (1: scratch, 2: distilled) holds
    "IoU / instance F1"; ``part`` 0 is the IoU, 1 the instance F1."""
    pair = [NUM + r" / [\d.]+", r"[\d.]+ / " + NUM][part]
    return r"\|\s*" + re.escape(label) + r"\s*\|" + r"[^|\n]*\|" * (column - 1) + r"\s*" + pair + r"\s*\|"


QUOTED = [
    # lesson 02: the loss comparison, the ablation and the teacher (README "Lesson 02" table)
    *(Q(L02, LOSS_TABLE, row(loss, col), row(f"UNet base 16 (300) | {loss}", col))
      for loss in ("BCE", "Dice", "border-weighted BCE") for col in (1, 2, 3)),
    Q(L02, ABLATION, row("without skips", 2), row("UNet base 16, no skips (300) | border-weighted BCE", 1)),
    Q(L02, ABLATION, row("without skips", 3), row("UNet base 16, no skips (300) | border-weighted BCE", 3)),
    Q(L02, ABLATION, r"removing the skips costs " + NUM + " IoU points",
      r"Removing the skips\s+costs " + NUM + r" IoU"),
    Q(L02, TEACHER, r"val IoU " + NUM, row("teacher UNet base 32, 7.8 M params (500) | border-weighted BCE", 1)),
    Q(L02, TEACHER, r"Dice " + NUM, row("teacher UNet base 32, 7.8 M params (500) | border-weighted BCE", 2)),
    Q(L02, TEACHER, r"instance F1 " + NUM, row("teacher UNet base 32, 7.8 M params (500) | border-weighted BCE", 3)),
    Q(L02, TEACHER, r"teacher: " + NUM + r" parameters", r"teacher UNet base 32, " + NUM + r" M params", 10**6),
    # lesson 04: the line-up after the same budget (README "Lesson 04" table: IoU, F1, GFLOPs, ORT ms)
    *(Q(L04, RESULTS, row(nb_name, col), row(readme_name, col))
      for nb_name, readme_name in (
          ("UNet teacher (base 32)", "UNet teacher (base 32)"),
          ("V3-Small w1.0 (default)", "MobileUNet V3-Small w1.0 (**default student**, 0.96 M params)"),
          ("V3-Small w0.75", "MobileUNet V3-Small w0.75"),
          ("V3-Small, stride-2 out", "V3-Small, output at stride 2"),
          ("V2 w0.5", "MobileUNet V2 w0.5"),
          ("V3-Large w1.0", "MobileUNet V3-Large w1.0"),
          ("LRASPP-MobileNetV3-L", "torchvision LRASPP-MobileNetV3-L"))
      for col in (1, 2, 3, 4)),
    Q(L04, COST, row("V3-Small w1.0 (default)", 1).replace(NUM, r"([\d,]+)"),
      r"\*\*default student\*\*, " + NUM + r" M params", 10**6),
    # lesson 04: the default student's summary (README sentences under the table)
    Q(L04, CHOICE, NUM + r"x fewer FLOPs than the teacher", r"The default student has " + NUM + r"x fewer FLOPs"),
    Q(L04, CHOICE, NUM + r"x faster than the teacher in ONNX Runtime", r"runs " + NUM + r"x faster\s+in ONNX Runtime"),
    Q(L04, CHOICE, r"instance F1 " + NUM + r" vs", r"instance F1 " + NUM + r" against [\d.]+ without it"),
    Q(L04, CHOICE, r"instance F1 [\d.]+ vs " + NUM, r"instance F1 [\d.]+ against " + NUM + r" without it"),
    # lesson 04's last section: the selfie segmenter's students on the cells (benchmarks/results/selfie_students.md)
    *(Q("benchmarks/results/selfie_students.md", SELFIE_SUMMARY, row(model, col, runtime), readme)
      for model, runtime, col, readme in (
          ("selfie_segmenter", "onnxruntime", 6, r"the selfie architecture scores " + NUM + r" IoU"),
          ("selfie_segmenter", "onnxruntime", 3, r"the selfie architecture scores [\d.]+ IoU at " + NUM + r" ms"),
          ("default_student", "onnxruntime", 6, r"default student " + NUM + r" at [\d.]+ ms, and `selfie_student`"),
          ("default_student", "onnxruntime", 3, r"default student [\d.]+ at " + NUM + r" ms, and `selfie_student`"),
          ("selfie_student", "onnxruntime", 6, r"concatenating decoder\) " + NUM + r" at"),
          ("selfie_student", "onnxruntime", 3, r"concatenating decoder\) [\d.]+ at " + NUM + r" ms"),
          ("MediaPipe selfie segmentation (.tflite)", "litert", 3, r"MediaPipe's model in LiteRT \(" + NUM + r" ms\)"),
          ("lean_selfie_student", "executorch-int8", 3, r"int8 ExecuTorch it takes " + NUM + r" ms"),
          ("lean_selfie_student", "executorch-int8", 6, r"at " + NUM + r" cells IoU for the int8 model"),
          ("lean_selfie_student", "onnxruntime", 6, r"\(" + NUM + r" in fp32\)"))),
    *(Q("benchmarks/results/selfie_students.md", SELFIE_RATIOS, row(model, col, runtime), readme)
      for model, runtime, col, readme in (
          ("selfie_student", "onnxruntime", 1, NUM + r"x slower\s+than MediaPipe's model in LiteRT"),
          ("selfie_student", "executorch-int8", 1, r"still " + NUM + r"x slower as int8"),
          ("lean_selfie_student", "executorch-int8", 1, NUM + r"x MediaPipe's model \([\d.]+-[\d.]+"),
          ("lean_selfie_student", "executorch-int8", 2, r"MediaPipe's model \(" + NUM + r"-[\d.]+\s+over three"),
          ("lean_selfie_student", "executorch-int8", 3, r"MediaPipe's model \([\d.]+-" + NUM + r"\s+over three"),
          ("lean_selfie_student", "executorch", 1, r"in fp32 ExecuTorch\s+it is " + NUM + r"x"))),
    # lesson 06: the shipped effect student, scored and timed again in the lesson (README "Lesson 06")
    Q(L06, SCORES, r"here:\s+PSNR " + NUM + r" dB", r"\*\*" + NUM + r" dB, SSIM [\d.]+, line F1"),
    Q(L06, SCORES, r"here:\s+PSNR [\d.]+ dB, SSIM " + NUM, r"\*\*[\d.]+ dB, SSIM " + NUM + r", line F1"),
    Q(L06, SCORES, r"here:\s+PSNR [\d.]+ dB, SSIM [\d.]+, line F1 " + NUM, r"SSIM [\d.]+, line F1 " + NUM + r"\*\*"),
    Q(L06, SPEED, row("teacher (cartoon effect)", 2), r"cartoon\s+teacher " + NUM + r" ms"),
    # lesson 06's error analysis (benchmarks/results/effect_ceiling.md, printed in the lesson)
    *(Q("benchmarks/results/effect_ceiling.md", None, row(label, 1), readme) for label, readme in (
        ("ceiling: the teacher's stages, pooled, through the guided lift", r"would score " + NUM + r" dB, so"),
        ("the student's smoothing + the teacher's lightness", r"teacher's lightness, " + NUM + r" dB, so"),
        ("no network: the filter's smoothing, the lightness of it (CIELAB)", r"with no network: " + NUM + r" dB\)"),
        ("self-guided filter {'passes': 3, 'radius': 1, 'eps': 0.01}", r"self-guided filter alone " + NUM + r":"),
        ("the shipped student's smoothed image", r"student's smoothing is\s+" + NUM + r" dB from"))),
    # what the student learns from its photos (benchmarks/results/effect_generalisation.md)
    Q("benchmarks/results/effect_generalisation.md", None, row("training (384)", 5),
      r"table\]\(benchmarks/results/effect_generalisation.md\): " + NUM + r" dB on its"),
    # the two teachers (benchmarks/results/effect_teachers.md, printed in lesson 06)
    *(Q("benchmarks/results/effect_teachers.md", None, row(label, column), readme)
      for label, column, readme in (
          ("scikit-image's table, sheared (EFFECT_VERSION 2)", 4, r"800 steps, " + NUM + r" dB against the sheared"),
          ("centred (EFFECT_VERSION 3)", 4, r"teacher and " + NUM + r"\s+against the centred one"),
          ("scikit-image's table, sheared (EFFECT_VERSION 2)", 8, r"photos themselves, " + NUM + r" and"),
          ("centred (EFFECT_VERSION 3)", 8, r"themselves, [\d.]+ and\s+" + NUM + r"\)"))),
    Q(L06, SPEED, r"\| student\s+\| onnxruntime\s+\| " + NUM, r"the student " + NUM + r" ms in ONNX\s+Runtime"),
    # the levers' milliseconds and the speed rewrite (benchmarks/results/effect_levers.md, effect_speed.md)
    Q("benchmarks/results/effect_levers.md", None,
      row("both exact steps + self-guided start, L1 + SSIM, network at quarter resolution", 5),
      r"\(" + NUM + r" against [\d.]+ ms\);"),
    Q("benchmarks/results/effect_levers.md", None, row("both exact steps + self-guided start, L1 + SSIM", 5),
      r"\([\d.]+ against " + NUM + r" ms\);"),
    *(Q("benchmarks/results/effect_speed.md", None, row(label, column), readme) for label, column, readme in (
        ("student, package steps, on the photo", 1, r"the package's on the photo " + NUM + r", "),
        ("student, plain steps, on the noise", 3, r"photo [\d.]+, " + NUM + r"x against"),
        ("student, package steps, on the photo", 3, r"x against " + NUM + r"x\)"))),
    # the .md prints 3 decimals, and 9.045 would round to 9.05: this one is read at full precision
    Q("benchmarks/results/effect_speed.json", None,
      r'"runner": "student, plain steps, on the noise",\s*"median_ms": ' + NUM,
      r"the plain steps on\s+noise " + NUM + r" ms"),
    Q(L06, SPEED, r"is " + NUM + r"x faster than the teacher", r"\*\*" + NUM + r"x faster\*\* \(target 50x"),
    # lesson 08: the effect student's pipeline with BlazeFace (README "Lesson 08")
    Q(L08, "frames, model input {MODEL_SIZE}", r"^" + NUM + r"x\d+ frames, model input",
      r"real-time pipeline\*\* \(" + NUM + r"x\d+ virtual-camera frames"),
    Q(L08, "frames, model input {MODEL_SIZE}", r"model input " + NUM + r"x",
      r"face crop at " + NUM + r"x\d+, \d+ frames"),
    Q(L08, "frames, model input {MODEL_SIZE}", r"x\d+, " + NUM + r" frames a clip",
      r"face crop at \d+x\d+, " + NUM + r" frames, \d+ thread\)"),
    Q(L08, "frames, model input {MODEL_SIZE}", r"budget " + NUM + r" ms a frame", r"no frame over " + NUM + r" ms\)"),
    Q(L08, "torch.set_num_threads(1)", r"threads " + NUM, r"face crop at \d+x\d+, \d+ frames, " + NUM + r" thread\)"),
    Q(L08, "summary = stage_table(runs)", r"on every " + NUM + r"th frame",
      r"face detection every\s+" + NUM + r"th frame"),
    Q(L08, DEADLINES, row("student ONNX Runtime fp32", 2), r"take a median of " + NUM + r" ms a frame"),
    Q(L08, DEADLINES, row("student ONNX Runtime fp32", 4), r"detector \(p99 " + NUM + r" ms, no frame over 33 ms\)"),
    Q(L08, DEADLINES, row("student eager fp32", 2), r"\), " + NUM + r" ms in eager PyTorch \(p99"),
    Q(L08, DEADLINES, row("student eager fp32", 4), r"ms in eager PyTorch \(p99\s+" + NUM + r" ms\)"),
    Q(L08, DEADLINES, row("student ONNX Runtime int8", 2), r"and " + NUM + r" ms in ONNX Runtime int8"),
    Q(L08, DEADLINES, row("student ONNX Runtime fp32 + cascade", 4), r"fifth frame \(p99 " + NUM + r" ms, "),
    Q(L08, DEADLINES, row("student ONNX Runtime fp32 + cascade", 7), r"ms, " + NUM + r"% of frames late at 60 fps",
      PER_CENT),
    Q(L08, "summary = stage_table(runs)", row("teacher (cartoon)", 7), r"teacher's pipeline takes " + NUM + r" ms"),
    Q(L08, AMDAHL, r"model stage: .*: " + NUM + r"x faster", r"The model stage is " + NUM + r"x faster"),
    Q(L08, AMDAHL, r"whole frame: .*: " + NUM + r"x faster", r"the whole frame " + NUM + r"x\s"),
    Q(L08, AMDAHL, r"composite\): [\d.]+ ms, " + NUM + r"% of it",
      r"the other stages are now " + NUM + r"% of the frame"),
    Q(L08, SCHEDULES, row("half size, every 5th", 4), r"cascade's frames under 9 ms \(p99\s+" + NUM + r" ms\)"),
    Q(L08, SCHEDULES, row("half size, every 5th", 5), r"cascade's frames under " + NUM + r" ms \(p99"),
    # the cascade's mean detect time over all frames, five times over: its cost on the frames it runs
    Q(L08, SCHEDULES, row("full size, every 5th", 8), r"adds about " + NUM + r" ms to every\s+fifth frame",
      Decimal("0.2")),
    Q(L08, SCHEDULES, r"'full size, every 5th': " + NUM, r"\(the cascade in " + NUM + r"\)"),
    Q(L08, SCHEDULES, r"'BlazeFace, every 5th': " + NUM, r"BlazeFace finds the face in all " + NUM + r" frames"),
    Q(L08, CELLS, deadline_row("cells student ONNX Runtime", 4), r"p99 of " + NUM + r" ms in ONNX Runtime"),
    Q(L08, CELLS, deadline_row("cells teacher UNet", 2), r"the teacher UNet\s+at a median of " + NUM + r" ms"),
    *(Q(L08, "still_runs = run_pipelines(still_pipes", row(name, 3), pattern)
      for name, pattern in (("teacher (cartoon)", r"still camera\): teacher " + NUM),
                            ("student eager fp32", r"teacher [\d.]+, student " + NUM),
                            ("student ONNX Runtime int8", r"int8 student " + NUM + r" \(it"))),
    # the model benchmark (README "Model benchmark"): its own results file, RGB input
    Q(MODELS_MD, AT_256, row("default student (V3-Small w1.0)", 2), r"\(0\.96 M params, " + NUM + r" GFLOPs, RGB"),
    Q(MODELS_MD, VS, r"\| UNet teacher \(base 32\) \| 1\s*\| [\d.]+\s*\| " + NUM,
      r"has " + NUM + r"x fewer FLOPs than the UNet\s+teacher"),
    Q(MODELS_MD, VS, r"\| UNet teacher \(base 32\) \| 1\s*\| [\d.]+\s*\| [\d.]+\s*\| " + NUM,
      r"teacher, runs " + NUM + r"x faster than it"),
    Q(MODELS_MD, VS, r"\| smp Unet-MobileNetV2\s*\| 1\s*\| [\d.]+\s*\| [\d.]+\s*\| " + NUM,
      r"runs " + NUM + r"x faster than\s+segmentation_models_pytorch"),
    Q(MODELS_MD, AT_256, row("default student (V3-Small w1.0)", 4),
      r"`Unet\(mobilenet_v2\)` \(" + NUM + r" ms against"),
    Q(MODELS_MD, AT_256, row("smp Unet-MobileNetV2", 4), r"\(\d[\d.]* ms against " + NUM + r" ms\)"),
    # lesson 05: the map of regimes (README "Lesson 05" sentence, table and the sentences under it)
    Q(L05, "STEPS, LONG_STEPS = ", r"; " + NUM + r" steps per student",
      r"\(the default student, " + NUM + r" steps of"),
    Q(L05, MAP, r"teacher: IoU " + NUM, r"the shipped teacher at IoU " + NUM + r" /"),
    Q(L05, MAP, r"teacher: IoU [\d.]+, instance F1 " + NUM,
      r"the shipped teacher at IoU [\d.]+ /\s+instance F1 " + NUM),
    Q(L05, RUNS, r"^" + NUM + r" runs on \d+ worker", r";\s+" + NUM + r" runs on 2 worker processes"),
    Q(L05, RUNS, r"runs on \d+ worker processes in " + NUM + r" s",
      r"runs on 2 worker processes in " + NUM + r" min", 60),
    *(Q(L05, MAP, below(table, row(regime, 1, recipe)), readme_regime(readme_label, readme_col, part))
      for regime, readme_label in REGIME_ROWS
      for recipe, readme_col in (("scratch", 1), ("distilled", 2))
      for table, part in ((IOU_MAP, 0), (F1_MAP, 1))),
    *(Q(L05, MAP, below(table, row(regime, col, "distilled")),
        r"\|\s*" + re.escape(readme_label) + r"\s*\|" + r"[^|\n]*\|" * skip + r"\s*" + pattern, PER_CENT)
      for regime, readme_label in REGIME_ROWS
      for table, skip in ((IOU_MAP, 2), (F1_MAP, 3))
      for col, pattern in ((4, r"(?:\*\*)?" + NUM + r"% \("), (5, r"(?:\*\*)?[\d.]+% \(" + NUM + r"-"),
                           (6, r"(?:\*\*)?[\d.]+% \([\d.]+-" + NUM + r"%\)"))),
    Q(L05, LONG, row("scratch", 1, "1500"), r"distilled both reach IoU " + NUM),
    Q(L05, LONG, row("distilled", 1, "1500"), r"distilled both reach IoU " + NUM),
    Q(L05, LONG, row("scratch", 6, "1500"), r"\(instance F1 " + NUM + r"\s+and [\d.]+,"),
    Q(L05, LONG, row("distilled", 6, "1500"), r"\(instance F1 [\d.]+\s+and " + NUM + r","),
    Q(L05, UNIFORM, row("distilled, uniform", 1), r"raise pixel IoU to " + NUM),
    Q(L05, UNIFORM, row("distilled, uniform", 4), r"drop instance F1 to\s+" + NUM),
    Q(L05, SWEEP, row("distilled, T=1", 4), r"\(T = 1 to 8:\s+" + NUM + r"-", PER_CENT),
    Q(L05, SWEEP, row("distilled", 4), r"\(T = 1 to 8:\s+[\d.]+-" + NUM + r"% of the gap\)", PER_CENT),
    Q(L05, SWEEP, row("distilled, T=1", 6), r"T = 1 costs instance F1 \(" + NUM + r"-"),
    Q(L05, SWEEP, row("distilled, T=1", 7), r"T = 1 costs instance F1 \([\d.]+-" + NUM + r"\s"),
    Q(L05, SWEEP, row("distilled", 6), r"against " + NUM + r"-[\d.]+ at T = 2\)"),
    Q(L05, SWEEP, row("distilled", 7), r"against [\d.]+-" + NUM + r" at T = 2\)"),
    Q(L05, UNSURE, r"between 0.1 and 0.9: " + NUM + r"% at T = 1", r"Only " + NUM + r"% of the teacher's pixels"),
    # the shipped checkpoints' manifests (README, end of "Lesson 05")
    Q(TEACHER_JSON, None, r'"checkpoint": \{[^}]*"bytes": ' + NUM, r"teacher " + NUM + r" MB \(fp16\)", 10**6),
    Q(L05, "manifest['metrics']['iou']", r"manifest: val IoU " + NUM, r"MB \(fp16\) at IoU " + NUM),
    Q(STUDENT_JSON, None, r'"checkpoint": \{[^}]*"bytes": ' + NUM, r"distilled student " + NUM + r" MB", 10**6),
    Q(STUDENT_JSON, None, r'"metrics": \{\s*"split": "val",\s*"iou": ' + NUM,
      r"distilled student [\d.]+ MB at IoU " + NUM),
    # lesson 07: the runtime x precision table (README "Lesson 07"): MB, ms at 1 and 2 threads, max abs diff,
    # IoU change; the nearest-upsampling row has no parity columns
    *(Q(L07, TABLE07, row(rt, nb_col, p, num=SCI), row(readme_rt, readme_col, readme_p, num=SCI))
      for rt, p, readme_rt, readme_p in RUNTIMES
      for nb_col, readme_col in ((1, 1), (2, 2), (4, 3), (6, 4), (7, 5))
      if not (p == "fp32, nearest" and nb_col > 4)),
    Q(L07, TABLE07, r"IoU change in points on " + NUM + r" validation frames", r"parity on " + NUM + r" validation"),
    Q(L07, "REPEATS = 3 if FAST else 30", r"median of " + NUM + r" rounds", r"median ms over " + NUM + r" interleaved"),
    Q(L07, INT8_FILES, r"model_int8\.pte: [\d.]+ MB, " + NUM + r"x smaller", r"files " + NUM + r"x \(`\.pte`\)"),
    Q(L07, INT8_FILES, r"model_int8\.onnx: [\d.]+ MB, " + NUM + r"x smaller",
      r"and " + NUM + r"x \(`\.onnx`\) smaller"),
    Q(L07, SPEEDUP, r"ExecuTorch int8 is " + NUM + r"x as fast", r"`\.pte` runs " + NUM + r"x as fast as fp32"),
    Q(L07, SPEEDUP, r"upsampling costs \+?" + NUM + r"%", r"does not take, costs " + NUM + r"%"),
    Q(L07, THREADS, row("128x128", 5), r"\(" + NUM + r"x the 1-thread time at 128x128"),
    Q(L07, THREADS, row("256x256", 5), r"1-thread time at 128x128, " + NUM + r"x at 256"),
    Q(L07, THREADS, row("512x512", 5), r"x at 256, " + NUM + r"x at\s+512"),
    Q(L07, TILED, r"tiled 4 to a frame " + NUM, r"student scored " + NUM + r" IoU on the tiled frames"),
    Q(L07, TILED, r"IoU one image at a time " + NUM, r"tiled frames and " + NUM + r"\s+one image at a time"),
    Q(L07, TILED, r"answer changes when tiled: " + NUM + r"%", r"changes " + NUM + r"% of its pixels"),
    Q(L07, TABLE07, row("ONNX Runtime", 2, "fp32"), r"ms in lesson 04 and " + NUM + r" ms in lesson\s+07's table"),
]


def cell_output(notebook: str, marker: str) -> str:
    """The stored text output of the one code cell whose source contains ``marker``."""
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    hits = [c for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"])]
    assert len(hits) == 1, f"{notebook}: {len(hits)} code cells contain {marker!r}; make the marker unique"
    text = []
    for out in hits[0].get("outputs", []):
        text.append("".join(out.get("text", "")))
        text.append("".join(out.get("data", {}).get("text/plain", "")))
    return "".join(text)


def file_section(path: str, heading: str | None) -> str:
    """The text of ``path`` from the line ``heading`` to the next heading of the same level."""
    text = (ROOT / path).read_text()
    if heading is None:
        return text
    level = heading.split(" ")[0]
    parts = re.split(rf"(?m)^(?={re.escape(level)} )", text)
    hits = [p for p in parts if p.startswith(heading + "\n")]
    assert len(hits) == 1, f"{path}: {len(hits)} sections headed {heading!r}"
    return hits[0]


def source_text(q: Q) -> str:
    if q.source.endswith(".ipynb"):
        return cell_output(q.source, q.cell)
    return file_section(q.source, q.cell)


def only_match(pattern: str, text: str, where: str) -> str:
    found = [m.group(1) for m in re.finditer(pattern, text, flags=re.MULTILINE)]
    assert len(found) == 1, f"{where}: {len(found)} matches for {pattern!r} (need exactly one): {found}"
    return found[0].replace(",", "")


def agrees(source: str, quoted: str) -> bool:
    """``quoted`` is ``source`` rounded half-up to ``quoted``'s decimals."""
    decimals = -Decimal(quoted).as_tuple().exponent           # "13.1": 1, "23": 0, "1.3e-5": 6
    return Decimal(source).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP) == Decimal(quoted)


def test_rounding_rule():
    assert agrees("13.059", "13.1") and agrees("22.9", "23") and agrees("0.9175", "0.918")
    assert agrees("7762465", "7762465") and not agrees("0.456", "0.45") and not agrees("12.6", "12")
    assert agrees("1.29e-05", "1.3e-5") and not agrees("1.29e-05", "1.2e-5") and agrees("40", "40.0")


@pytest.mark.parametrize("q", QUOTED, ids=[f"{q.source}:{q.in_readme[:40]}" for q in QUOTED])
def test_readme_quotes_the_source(q):
    value = only_match(q.in_source, source_text(q), f"{q.source} ({q.cell or 'file'})")
    quoted = only_match(q.in_readme, README.read_text(), "README.md")
    value = str(Decimal(value) / q.unit)
    assert agrees(value, quoted), f"README.md quotes {quoted} where {q.source} shows {value} ({q.in_readme!r})"
