"""The cloud route: ``binder/`` installs what ``course.sh`` installs, and its requirements resolve.

Binder itself cannot run here; what can be checked offline is that the pins
agree with ``course.sh`` and the README's badges point at ``binder/`` and a
lesson that exists. With a network, pip resolves the requirements (a dry run,
nothing installed); each index it cannot reach makes that test skip, naming it.
"""
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"
PYPI = "https://pypi.org/simple"


def _requirements() -> list[str]:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _course_pins() -> dict[str, str]:
    pins = re.search(r'^TORCH_PINS="([^"]+)"', (REPO / "course.sh").read_text(), re.M)[1]
    return dict(pin.split("==") for pin in pins.split())


def test_binder_pins_are_course_sh_pins_on_cpu_wheels():
    reqs = _requirements()
    pinned = dict(line.split("==") for line in reqs if "==" in line)
    assert {name: version.split("+")[0] for name, version in pinned.items()} == _course_pins()
    assert all(version.endswith("+cpu") for version in pinned.values()), "Binder has no GPU: use the +cpu wheels"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in reqs
    assert "-e .[course]" in reqs, "Binder must install the course itself, with its course extra"


def test_binder_registers_the_kernel_lesson_06_names():
    kernels = {json.loads(p.read_text())["metadata"].get("kernelspec", {}).get("name")
               for p in (REPO / "notebooks").glob("[0-9]*.ipynb")}
    post_build = (BINDER / "postBuild").read_text()
    for name in kernels - {None, "python3"}:
        assert f"--name {name}" in post_build, f"a lesson names kernel {name!r}: binder/postBuild must register it"
    assert (BINDER / "postBuild").stat().st_mode & 0o111 and (BINDER / "start").stat().st_mode & 0o111
    assert "MOBILEUNET_FAST=1" in (BINDER / "start").read_text()


def test_readme_badges_open_a_lesson_that_exists():
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\((https://(?:colab\.research\.google\.com|mybinder\.org)/[^)]+)\)", readme)
    assert len(targets) == 2, targets
    for url in targets:
        lesson = re.search(r"notebooks/([0-9]{2}_\w+\.ipynb)", url)
        assert lesson and (REPO / "notebooks" / lesson[1]).is_file(), url
    for badge in re.findall(r"!\[[^\]]*\]\((docs/badges/[^)]+)\)", readme):
        assert (REPO / badge).is_file(), badge


def _unreachable(*urls: str) -> list[str]:
    """The hosts of ``urls`` that do not answer on their port within a few seconds."""
    down = []
    for url in urls:
        host, port = urlsplit(url).hostname, urlsplit(url).port or 443
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError:
            down.append(host)
    return down


def _dry_run(requirements: Path, tmp_path: Path) -> dict:
    """``pip install --dry-run`` of ``requirements`` from the repository root, as if nothing were installed."""
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-r", str(requirements)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip could not resolve {requirements.name}:\n{done.stderr[-3000:]}"
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


@pytest.mark.slow
def test_binder_requirements_resolve(tmp_path):
    indexes = [line.split()[1] for line in _requirements() if line.startswith("--extra-index-url")]
    down = _unreachable(PYPI, *indexes)
    if down:
        pytest.skip(f"cannot reach {', '.join(down)}: binder/requirements.txt resolves only with them")
    versions = _dry_run(BINDER / "requirements.txt", tmp_path)
    assert versions["torch"] == "2.14.1+cpu" and versions["mobileunet"]


@pytest.mark.slow
def test_course_resolves_with_the_pins_from_pypi_alone(tmp_path):
    """What Binder installs besides the CPU index: the course extra with torch at course.sh's pins."""
    down = _unreachable(PYPI)
    if down:
        pytest.skip(f"cannot reach {', '.join(down)}")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(f"{name}=={version}" for name, version in _course_pins().items())
                            + "\n-e .[course]\n")
    versions = _dry_run(requirements, tmp_path)
    assert {name: versions[name] for name in _course_pins()} == _course_pins()
    assert {"jupyterlab", "executorch", "onnxruntime"} <= set(versions)
