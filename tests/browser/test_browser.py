"""The course in a real browser: JupyterLab in headless Chromium, Run All, move a slider.

nbval proves every cell runs in a kernel; this test proves a learner sees the
lesson: JupyterLab opens the notebook, Run All finishes without a traceback,
widgets render, and moving a slider makes the kernel redraw what it shows.

It needs Debian's ``chromium`` and the ``playwright`` package (no browser
download), and runs only with ``MOBILEUNET_BROWSER=1``: ``bash course.sh
browser`` installs both and runs it. Screenshots go to ``build/browser/``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "browser"
RUN_ALL_TIMEOUT_S = 900

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(os.environ.get("MOBILEUNET_BROWSER") != "1",
                       reason="real-browser test: run `bash course.sh browser` (or set MOBILEUNET_BROWSER=1)"),
]
# The `browser` fixture (headless Chromium through playwright) is in conftest.py, shared with test_site.py.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_notebooks(dest: Path) -> None:
    """The course's notebooks with outputs cleared, so every prompt and output seen comes from this run."""
    dest.mkdir(parents=True)
    for src in sorted((REPO / "notebooks").glob("[0-9]*.ipynb")):
        nb = json.loads(src.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb["metadata"].pop("widgets", None)
        (dest / src.name).write_text(json.dumps(nb, indent=1))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on loopback over a scratch copy of the notebooks: (base url, token)."""
    root = tmp_path_factory.mktemp("lab")
    _copy_notebooks(root / "notebooks")
    settings = root / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "MOBILEUNET_FAST": "1", "OMP_NUM_THREADS": "1",
           "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces")}
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root / 'notebooks'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (root / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _open_and_run_all(page, base: str, token: str, name: str) -> float:
    """Open ``name`` in JupyterLab, wait for its kernel, Run All, wait for the last cell; seconds taken."""
    workspace = Path(name).stem.replace("_", "-")       # a fresh workspace: no tabs from another test
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    # The status bar can read "Idle" before the kernel is connected: also ask the server.
    _until(page, lambda: _kernel_idle(page) and _session_idle(base, token, name), 180,
           f"{name}: the kernel never reported Idle")
    start = time.perf_counter()
    for attempt in range(3):
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        if _until(page, lambda: _started(page), 60, None):
            break
    else:
        raise AssertionError(f"{name}: Run All did not start a cell (status bar: {_status(page)!r})")
    # Done when no prompt shows [*] and every non-empty code cell has a number, or a traceback appeared.
    page.wait_for_function("""() => {
        const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
        const prompts = cells.filter(c => (c.querySelector('.cm-content')?.textContent || '').trim())
                             .map(c => c.querySelector('.jp-InputArea-prompt').textContent);
        if (prompts.some(t => t.includes('*'))) return false;
        const failed = [...document.querySelectorAll('.jp-OutputArea-output')]
                       .some(o => o.textContent.includes('Traceback'));
        return failed || prompts.every(t => /\\[\\d+\\]/.test(t));
    }""", timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
    _until(page, lambda: _kernel_idle(page), 60, f"{name}: the kernel stayed busy after the last cell")
    return time.perf_counter() - start


def _until(page, condition, seconds: float, message: str | None) -> bool:
    """Poll ``condition`` every 0.5 s for ``seconds``, accepting any dialog JupyterLab shows
    (a notebook without a usable kernelspec asks which kernel to start: take the default)."""
    deadline = time.monotonic() + seconds
    while not condition():
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        if accept.count():
            accept.first.click()
        if time.monotonic() > deadline:
            if message is None:
                return False
            raise AssertionError(f"{message} (status bar: {_status(page)!r})")
        page.wait_for_timeout(500)
    return True


def _started(page) -> bool:
    """Some code cell's prompt shows [*] or a number."""
    return page.evaluate("""() => [...document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')]
        .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))""")


def _session_idle(base: str, token: str, name: str) -> bool:
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as r:
        sessions = json.load(r)
    return any(s["path"].endswith(name) and (s.get("kernel") or {}).get("execution_state") == "idle"
               for s in sessions)


def _status(page) -> str:
    bar = page.locator(".jp-StatusBar-Widget")
    return bar.first.inner_text() if bar.count() else ""


def _kernel_idle(page) -> bool:
    return re.search(r"\|\s*Idle", _status(page)) is not None


def _assert_clean(page, name: str) -> None:
    """Every code cell ran and no output holds a traceback or a widget that failed to load."""
    prompts = page.eval_on_selector_all(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell",
        "cells => cells.filter(c => (c.querySelector('.cm-content')?.textContent || '').trim())"
        ".map(c => c.querySelector('.jp-InputArea-prompt').textContent.trim())")
    assert prompts, f"{name}: no code cells found"
    not_run = [i for i, t in enumerate(prompts) if not re.search(r"\[\d+\]", t)]
    errors = page.eval_on_selector_all(
        ".jp-OutputArea-output", "outs => outs.map(o => o.textContent)"
        ".filter(t => t.includes('Traceback') || t.includes('Error displaying widget'))")
    assert not errors, f"{name}: error output after Run All:\n" + "\n---\n".join(e[-1500:] for e in errors)
    assert not not_run, f"{name}: code cells {not_run} (of {len(prompts)}) did not run"


def _text(locator) -> str:
    return (locator.text_content() or "").strip()


def _shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_lesson_01_runs_in_the_browser(browser, lab):
    """Lesson 01 (no widgets): Run All finishes cleanly and its figures render."""
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        seconds = _open_and_run_all(page, base, token, "01_unet_anatomy.ipynb")
        _assert_clean(page, "01")
        images = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img")
        assert images.count() >= 1, "lesson 01 shows no figure"
        images.last.scroll_into_view_if_needed()
        print(f"\nlesson 01: Run All {seconds:.0f} s, {images.count()} figures")
    finally:
        _shot(page, "01_unet_anatomy")
        page.close()


def test_lesson_04_explorer_answers_its_slider(browser, lab):
    """Lesson 04: Run All finishes cleanly, the architecture explorer renders, and moving its
    width slider makes the kernel recompute the table (parameter count) and redraw the U."""
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        seconds = _open_and_run_all(page, base, token, "04_mobile_unet.ipynb")
        _assert_clean(page, "04")
        panel = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
        widgets = page.locator(f"{panel} .jupyter-widgets")
        assert widgets.count() >= 1, "lesson 04 shows no widget"
        explorer = page.locator(f"{panel} .widget-vbox").filter(has=page.locator(".widget-slider")).first
        slider = explorer.locator(".widget-slider").first
        slider.scroll_into_view_if_needed()
        slider.wait_for(state="visible", timeout=30_000)
        table, readout = explorer.locator(".widget-html").first, slider.locator(".widget-readout")
        picture = explorer.locator(".widget-image").first
        # The views fill in asynchronously after the kernel is idle (the HTML and Image models get
        # their values in comm messages that can land after the view first renders): wait for them.
        # textContent, not innerText: JupyterLab skips rendering off-screen cells (content-visibility),
        # and innerText of a part not rendered can read ''.
        table.scroll_into_view_if_needed()
        try:
            page.wait_for_function(
                "([t, r, p]) => t.textContent.includes('params') && r.textContent.trim() && p.getAttribute('src')",
                arg=[table.element_handle(), readout.element_handle(), picture.element_handle()],
                timeout=60_000, polling=250)
        except Exception as err:
            raise AssertionError("explorer did not fill in within 60 s: table "
                                 f"{table.text_content()!r}, readout {readout.text_content()!r}, picture "
                                 f"src set: {bool(picture.get_attribute('src'))}; panel: "
                                 f"{explorer.text_content()[:500]!r}") from err
        before_table, before_readout = _text(table), _text(readout)
        before_row = table.locator("td").all_text_contents()
        before_picture = picture.get_attribute("src")

        handle = slider.locator(".noUi-handle")
        handle.focus()
        handle.press("ArrowLeft")             # width 1.0 -> 0.75: the kernel rebuilds the model
        page.wait_for_function("([el, old]) => el.textContent.trim() !== old",
                               arg=[table.element_handle(), before_table],
                               timeout=120_000)
        _until(page, lambda: _kernel_idle(page), 120, "04: the kernel stayed busy after the slider moved")
        after_readout, after_row = _text(readout), table.locator("td").all_text_contents()
        assert after_readout != before_readout, f"slider readout stayed {before_readout!r}"
        assert picture.get_attribute("src") != before_picture, "the explorer's U drawing was not redrawn"
        _assert_clean(page, "04 after the slider moved")
        explorer.scroll_into_view_if_needed()
        print(f"\nlesson 04: Run All {seconds:.0f} s; width {before_readout} -> {after_readout}; "
              f"table row {' | '.join(before_row)!r} -> {' | '.join(after_row)!r}")
    finally:
        _shot(page, "04_mobile_unet")
        page.close()
