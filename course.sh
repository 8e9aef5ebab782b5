#!/usr/bin/env bash
# The course's two set-up commands, and a few for maintainers.
#
#   bash course.sh lab            create .venv if needed, open JupyterLab on notebooks/
#   bash course.sh test           create .venv if needed, run every test (package + nbval, FAST, and the
#                                 nbgrader round: installs the `grading` extra into .venv if missing)
#   bash course.sh test-one NB    nbval on one notebook, FAST mode
#   bash course.sh outputs [NB..] re-run notebooks in full mode and store their outputs
#   bash course.sh browser        lessons 01 and 04 in JupyterLab, and the built website, in headless
#                                 Chromium (installs Debian's chromium with apt and playwright if missing)
#   bash course.sh student-copies [DIR] [--force]  the class's copies: solutions stubbed, outputs cleared
#                                 (default build/student)
#   bash course.sh site           the course as a website in build/site/, from the committed outputs
#                                 (installs the `site` extra into .venv if missing; executes nothing)
#   bash course.sh grading-test   the lessons through nbgrader: release them, grade every exercise twice
#                                 (installs the `grading` extra into .venv if missing)
#   bash course.sh models         MediaPipe's selfie segmentation and BlazeFace into data/models/ (optional:
#                                 pip downloads the mediapipe wheel, about 36 MB, keeps two sha256-checked files)
#
# MOBILEUNET_TORCH_INDEX=URL picks where torch comes from (a CPU-only index
# keeps a laptop install near 1 GB: see README).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
BIN="$VENV/bin"
[ -d "$VENV/Scripts" ] && BIN="$VENV/Scripts"          # a venv made by a Windows Python (Git Bash)
PY="$BIN/python"
STAMP="$VENV/.mobileunet-installed"
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"

ensure_env() {
    if [ ! -x "$PY" ] && [ ! -x "$PY.exe" ]; then
        BASE="${MOBILEUNET_PYTHON:-python3}"
        [ -z "${MOBILEUNET_PYTHON:-}" ] && ! command -v python3 >/dev/null && BASE=python
        if ! "$BASE" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "[course] the course needs Python 3.10 or newer; '$BASE' is $("$BASE" -V 2>/dev/null || echo "not found")." >&2
            echo "[course] install a newer Python, or point MOBILEUNET_PYTHON at one" >&2
            exit 1
        fi
        echo "[course] creating $VENV with $("$BASE" -V 2>&1)"
        "$BASE" -m venv "$VENV" || { rm -rf "$VENV"; echo "[course] could not create $VENV" >&2; exit 1; }
        [ -d "$VENV/Scripts" ] && BIN="$VENV/Scripts" && PY="$BIN/python"
    fi
    if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
        echo "[course] installing torch and the course (one time, a few minutes)"
        "$PY" -m pip install -q --upgrade pip
        if [ -n "${MOBILEUNET_TORCH_INDEX:-}" ]; then
            "$PY" -m pip install -q $TORCH_PINS --index-url "$MOBILEUNET_TORCH_INDEX"
        else
            "$PY" -m pip install -q $TORCH_PINS
        fi
        "$PY" -m pip install -q -e ".[course,test]"
        "$PY" -m ipykernel install --sys-prefix --name mobileunet --display-name "mobileunet" >/dev/null
        "$PY" -m mobileunet.commands.mediapipe fetch \
            || echo "[course] MediaPipe's models not fetched: optional, 'bash course.sh models' tries again"
        touch "$STAMP"                                  # only a complete install is marked as one
    fi
}

cmd="${1:-help}"
shift || true
case "$cmd" in
    lab)
        ensure_env
        exec "$BIN/jupyter" lab notebooks/ "$@"
        ;;
    test)
        ensure_env
        # tests/test_grading.py grades every exercise through nbgrader: the `grading` extra, which
        # a learner's `lab` install leaves out (its JupyterLab menus), is the test command's.
        "$PY" -c "import nbgrader" 2>/dev/null || "$PY" -m pip install -q -e ".[grading]"
        # The linter first (a second), then one pytest run: package tests, then nbval over
        # every notebook in FAST mode. --dist loadfile keeps each notebook's cells on one worker.
        "$PY" -m ruff check .
        MOBILEUNET_FAST=1 exec "$PY" -m pytest -n 2 --dist loadfile \
            --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
            tests notebooks "$@"
        ;;
    test-one)
        ensure_env
        MOBILEUNET_FAST=1 exec "$PY" -m pytest --nbval-lax --nbval-current-env \
            --nbval-cell-timeout=600 "$@"
        ;;
    browser)
        ensure_env
        if [ ! -x "${MOBILEUNET_CHROMIUM:-/usr/bin/chromium}" ]; then
            echo "[course] installing Debian's chromium (apt)"
            SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
            { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; } || {
                echo "[course] could not install chromium: install it, or set MOBILEUNET_CHROMIUM=/path/to/chromium" >&2
                exit 1; }
        fi
        "$PY" -c "import playwright" 2>/dev/null || "$PY" -m pip install -q -e ".[browser]"
        # playwright drives the system chromium: no `playwright install` download.
        MOBILEUNET_BROWSER=1 exec "$PY" -m pytest -m browser -p no:xdist -s tests/browser "$@"
        ;;
    outputs)
        ensure_env
        notebooks=("$@")
        [ ${#notebooks[@]} -eq 0 ] && notebooks=(notebooks/[0-9]*.ipynb)
        for nb in "${notebooks[@]}"; do
            echo "[course] running $nb in full mode"
            start=$(date +%s)
            MOBILEUNET_FAST=0 "$BIN/jupyter" nbconvert --to notebook --execute --inplace \
                --ExecutePreprocessor.timeout=3600 \
                --ExecutePreprocessor.store_widget_state=False "$nb"
            "$PY" -m mobileunet.nbtools strip-widgets "$nb"
            echo "[course] $nb: $(( $(date +%s) - start )) s"
        done
        ;;
    site)
        ensure_env
        "$PY" -c "import sphinx, myst_nb, furo" 2>/dev/null || "$PY" -m pip install -q -e ".[site]"
        rm -rf build/site build/site-doctrees build/jupyter_execute
        start=$(date +%s)
        # site/conf.py reads the repository itself; -W: a broken reference fails the build.
        "$PY" -m sphinx -b html -c site -d build/site-doctrees -q -W --keep-going . build/site "$@"
        echo "[course] build/site/index.html ($(( $(date +%s) - start )) s)"
        ;;
    grading-test)
        ensure_env
        "$PY" -c "import nbgrader" 2>/dev/null || "$PY" -m pip install -q -e ".[grading]"
        MOBILEUNET_FAST=1 exec "$PY" -m pytest -p no:xdist tests/test_grading.py "$@"
        ;;
    student-copies)
        ensure_env
        "$PY" -m mobileunet.nbtools student-copies --out "${1:-build/student}" "${@:2}"
        ;;
    models)
        ensure_env
        exec "$PY" -m mobileunet.commands.mediapipe fetch "$@"
        ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        ;;
esac
