"""The command layer sits on top: no library module imports ``mobileunet.cli`` (or the modules that
are only command-line halves), found by walking every module's imports, top level and inside functions."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mobileunet"
COMMAND_LAYER = {"cli", "__main__", "nbtools", "commands"}
"""Modules that parse argv (``commands/`` is a package of them: effect, export, bench)."""
MAY_IMPORT_CLI = COMMAND_LAYER


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("mobileunet."):
                found.add(node.module.split(".")[1])
            elif node.level == 1 and not node.module:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mobileunet."))
    return found


def test_no_library_module_imports_the_command_line():
    offenders = {p.stem: sorted(imported_modules(p) & COMMAND_LAYER) for p in PACKAGE.glob("*.py")
                 if p.stem not in MAY_IMPORT_CLI}
    assert imported_modules(PACKAGE / "effect_distill.py").isdisjoint(COMMAND_LAYER)
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_command_halves_live_in_the_command_layer():
    for p in PACKAGE.glob("*.py"):
        if p.stem not in COMMAND_LAYER:
            text = p.read_text()
            assert "def add_arguments(" not in text and "argparse" not in text, p.name


def test_manifests_have_one_home():
    for p in PACKAGE.glob("*.py"):
        if p.stem in ("manifest",):
            continue
        assert "def write_manifest" not in p.read_text() and "def read_manifest" not in p.read_text(), p.name


def test_lessons_read_manifests_from_their_home():
    for nb in (PACKAGE.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        text = nb.read_text()
        assert "from mobileunet.cli import read_manifest" not in text, nb.name


def test_one_registry_of_builders():
    from mobileunet import models
    from mobileunet.cli import BUILDERS
    from mobileunet.effect_distill import EFFECT_STUDENTS  # noqa: F401  (the parser's copy of the names)

    assert BUILDERS == tuple(models.builders("segmentation"))
    assert EFFECT_STUDENTS == tuple(models.builders("effect"))
    assert set(models.builders()) == set(BUILDERS) | set(EFFECT_STUDENTS)
    for name, build in models.builders().items():
        assert getattr(models, name) is build


OWN_MODULES_MAY_WAIT = {"realtime", "blazeface", "mediapipe"}
"""Modules that import a package module inside a function: lesson 08's camera sources, which load
photos and cells only when a virtual camera is made, and the MediaPipe runner."""


def test_the_package_imports_its_own_modules_at_the_top():
    late = []
    for p in sorted(PACKAGE.rglob("*.py")):
        if p.stem in OWN_MODULES_MAY_WAIT:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late += [f"{p.name}:{sub.lineno} {node.name}" for sub in ast.walk(node)
                         if isinstance(sub, ast.ImportFrom) and sub.level >= 1]
    assert not late, late


def test_no_function_has_more_than_50_lines_of_code():
    """Docstrings do not count: a long explanation is welcome, a long body is not."""
    long = []
    for p in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) and len(node.body) > 1 else node.body
                lines = node.end_lineno - body[0].lineno + 1
                if lines > 50:
                    long.append(f"{p.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
