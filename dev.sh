#!/usr/bin/env bash
# One entry point for people and CI.
#   bash dev.sh demo   install into .venv, import the public history, train, recommend
#   bash dev.sh test   install into .venv (with test extras and Chromium), run ruff, mypy, then the tests
#   bash dev.sh install [EXTRAS]   only install
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
PIP="$VENV/bin/pip"
DATA="${RECOMMENDER_DATA:-../shared/data}"

install() {
    local extras="${1:-}"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[dev.sh] creating $VENV with $($PYTHON --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    local log="$VENV/install.log"
    echo "[dev.sh] installing into $VENV (log: $log)"
    {
        "$PIP" install -q --disable-pip-version-check --upgrade pip "setuptools<82" wheel &&
        # torch first, pinned, so pip takes the local CPU wheel and never the CUDA build.
        "$PIP" install -q --disable-pip-version-check "torch==2.13.0" &&
        "$PIP" install -q --disable-pip-version-check -c constraints.txt -e ".${extras:+[$extras]}"
    } >"$log" 2>&1 || { tail -40 "$log" >&2; echo "[dev.sh] install failed (full log: $log)" >&2; exit 1; }
}

install_browser() {
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
            echo "[dev.sh] installing Debian chromium + chromium-driver for the browser test"
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
                || echo "[dev.sh] WARNING: could not install chromium; the browser test will be skipped"
        else
            echo "[dev.sh] chromium not found and not root: the browser test will be skipped"
        fi
    fi
}

case "${1:-}" in
    demo)
        install
        export RECOMMENDER_HOME="${RECOMMENDER_HOME:-.recommender}"
        "$VENV/bin/python" -m recommender demo --data "$DATA"
        ;;
    test)
        install test
        install_browser
        shift || true
        export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
        # lint and types first (settings in pyproject.toml); either failing stops before pytest
        echo "[dev.sh] ruff check ."
        "$VENV/bin/ruff" check . || { echo "[dev.sh] ruff check . failed (fix the code, or 'ruff check --fix .' for the safe fixes)" >&2; exit 1; }
        echo "[dev.sh] mypy (history/ and recommender/, see [tool.mypy])"
        "$VENV/bin/mypy" || { echo "[dev.sh] mypy failed: fix the type errors above" >&2; exit 1; }
        # two workers (this machine and CI have 2 cores); a test file stays on one worker, so its
        # module-scoped stores are built once. PYTEST_WORKERS=0 runs in one process.
        workers="${PYTEST_WORKERS:-2}"
        if [ "$workers" = "0" ]; then
            "$VENV/bin/python" -m pytest -q "$@"
        else
            "$VENV/bin/python" -m pytest -q -n "$workers" --dist loadfile "$@"
        fi
        ;;
    install)
        install "${2:-}"
        ;;
    *)
        echo "usage: bash dev.sh demo | test [pytest args] | install [extras]" >&2
        exit 2
        ;;
esac
