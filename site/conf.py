"""Sphinx configuration of the course website: ``bash course.sh site`` builds it into ``build/site/``.

The site is read from the repository itself (``sphinx-build -c site . build/site``):
the README is the front page, each lesson notebook a page with the outputs it
was committed with (nothing is executed), and the docs beside them. Every asset
the pages use is written into ``build/site/``: the theme (furo) loads no fonts
or scripts from elsewhere, and formulas are MathML that the browser draws
itself, so the site reads offline, from ``file://`` too.
"""
import json
import re
import shutil
from pathlib import Path

from docutils import nodes
from docutils.utils.math import latex2mathml

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DOCS = ["docs/INSTRUCTOR", "docs/export", "docs/effect_student", "data/README", "benchmarks/README",
        *sorted(f"benchmarks/results/{p.stem}" for p in (REPO / "benchmarks" / "results").glob("*.md")),
        "CHANGELOG"]

project = "mobileunet"
author = "the mobileunet authors"
copyright = "2026, the mobileunet authors"
release = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)[1]

extensions = ["myst_nb"]
root_doc = "README"
include_patterns = ["README.md", "CHANGELOG.md", "notebooks/[0-9][0-9]_*.ipynb", "docs/*.md", "data/README.md",
                    "benchmarks/README.md", "benchmarks/results/*.md"]
exclude_patterns = [".*", "build", "site", "mobileunet", "tests", "data/cache", "data/checkpoints", "binder"]

nb_execution_mode = "off"                     # the committed outputs are the lesson: never re-run at build
nb_ipywidgets_js = {}                         # widget state is stripped; no widget manager from a CDN
myst_heading_anchors = 3                      # README's "#testing"-style links resolve
myst_enable_extensions = ["dollarmath"]       # $...$ and $$...$$, as Jupyter reads them
suppress_warnings = ["myst.header"]           # lessons start at "# NN · title" and may skip a level

html_theme = "furo"
html_title = f"mobileunet {release}"
html_static_path = []
html_math_renderer = "mathml"
html_copy_source = False
html_show_sourcelink = False

WIDGET = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ('<p class="widget-note"><em>An interactive explorer runs here when the notebook runs in JupyterLab '
               '(<code>bash course.sh lab</code>); a page cannot run it.</em></p>')


def _lesson_pages(app, docname: str, source: list[str]) -> None:
    """The front page gets the lessons' table of contents (hidden: the README's own table shows them);
    a lesson's widget outputs, which a static page cannot run, become a note saying where they run."""
    if docname == root_doc:
        entries = "\n".join(f"notebooks/{name}" for name in LESSONS)
        source[0] += (f"\n\n```{{toctree}}\n:hidden:\n:caption: Lessons\n\n{entries}\n```\n"
                      f"\n```{{toctree}}\n:hidden:\n:caption: For teachers and maintainers\n\n"
                      + "\n".join(DOCS) + "\n```\n")
    elif docname.startswith("notebooks/"):
        nb = json.loads(source[0])
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                if WIDGET in out.get("data", {}):
                    out["data"] = {"text/html": WIDGET_NOTE}
        source[0] = json.dumps(nb)


def _mathml(node: nodes.Element, block: bool) -> str:
    try:
        return latex2mathml.tex2mathml(node.astext(), as_block=block)
    except SyntaxError as err:                # docutils' LaTeX subset: say which formula, keep the build going
        raise ValueError(f"formula {node.astext()!r} is outside docutils' LaTeX subset: {err}") from err


def _visit_math(self, node):
    self.body.append(_mathml(node, block=False))
    raise nodes.SkipNode


def _visit_math_block(self, node):
    self.body.append(f'<div class="math">{_mathml(node, block=True)}</div>')
    raise nodes.SkipNode


def _front_page_as_index(app, exc) -> None:
    """``index.html`` is the README's page, so the folder opens on the front page."""
    if exc is None and app.builder.format == "html":
        shutil.copyfile(Path(app.outdir) / "README.html", Path(app.outdir) / "index.html")


def setup(app):
    app.add_html_math_renderer("mathml", (_visit_math, None), (_visit_math_block, None))
    app.connect("source-read", _lesson_pages)
    app.connect("build-finished", _front_page_as_index)
