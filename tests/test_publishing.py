"""What a release publishes agrees with ``pyproject.toml``: the LICENSE, CITATION.cff and CHANGELOG.md.

``pyproject.toml`` is the one home of the version and the licence; the other
files repeat them for readers and for citation tools, and this test keeps them
in step (README, "Versions").
"""
import re
from pathlib import Path

import pytest

import mobileunet

REPO = Path(__file__).resolve().parents[1]

LICENCE_TEXTS = {
    "MIT": ("MIT License", "Permission is hereby granted, free of charge, to any person obtaining a copy"),
}
"""SPDX identifier -> (the LICENSE file's first line, a sentence its text must contain)."""


def _project() -> dict:
    """``[project]`` of pyproject.toml: tomllib where Python has it (3.11+), else the two keys by line."""
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:                          # Python 3.10
        return {key: m[1] for key in ("version", "license")
                if (m := re.search(rf'^{key}\s*=\s*"([^"]+)"', text, re.M))}
    return tomllib.loads(text)["project"]


def _citation() -> dict:
    """CITATION.cff as a dict: PyYAML where installed, else its top-level ``key: value`` lines."""
    text = (REPO / "CITATION.cff").read_text()
    try:
        import yaml
    except ModuleNotFoundError:
        return {m[1]: m[2].strip().strip("\"'") for m in re.finditer(r"^([a-z-]+):[ \t]*(\S.*)$", text, re.M)}
    return yaml.safe_load(text)


PROJECT = _project()


def test_license_file_is_the_licence_pyproject_declares():
    licence = PROJECT["license"]
    assert licence in LICENCE_TEXTS, (f"pyproject.toml declares licence {licence!r}, which this test does not "
                                      f"know: add its first line and a sentence of its text to LICENCE_TEXTS")
    first_line, sentence = LICENCE_TEXTS[licence]
    text = (REPO / "LICENSE").read_text()
    assert text.splitlines()[0].strip() == first_line, f"LICENSE should start with {first_line!r}"
    assert sentence in " ".join(text.split()), f"LICENSE is not the {licence} text"
    assert re.search(r"^Copyright \(c\) \d{4} the mobileunet authors$", text, re.M), "LICENSE: copyright line"


def test_citation_names_the_version_and_licence_of_pyproject():
    cff = _citation()
    assert str(cff["cff-version"]) == "1.2.0"
    assert str(cff["version"]) == PROJECT["version"], (
        f"CITATION.cff says version {cff['version']}, pyproject.toml {PROJECT['version']}: update CITATION.cff")
    assert cff["license"] == PROJECT["license"]
    assert cff["title"] and "message" in cff and "authors" in cff


def test_package_version_is_pyprojects():
    assert mobileunet.__version__ == PROJECT["version"], "mobileunet/__init__.py and pyproject.toml disagree"


def test_changelog_has_an_entry_for_the_version():
    text = (REPO / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[Unreleased\]$", text, re.M), "CHANGELOG.md needs an '## [Unreleased]' section"
    version = re.escape(PROJECT["version"])
    assert re.search(rf"^## \[{version}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M), (
        f"CHANGELOG.md has no '## [{PROJECT['version']}] - YYYY-MM-DD' entry for pyproject's version")


@pytest.mark.parametrize("name", ["LICENSE", "CHANGELOG.md", "CITATION.cff"])
def test_readme_links_the_publishing_files(name):
    assert f"]({name})" in (REPO / "README.md").read_text()
