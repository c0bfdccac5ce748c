#!/usr/bin/env bash
# The action's first step: fitplan in its own virtual environment under $RUNNER_TEMP (the repository's
# own environment is left alone), and FITPLAN_BIN in $GITHUB_ENV for the next step.
# Inputs: INPUT_FITPLAN (what pip installs; default the action's checkout), INPUT_PYTHON.
set -euo pipefail
python="${INPUT_PYTHON:-python3}"
source="${INPUT_FITPLAN:-${GITHUB_ACTION_PATH:?GITHUB_ACTION_PATH is not set: run this as a GitHub action step}}"
venv="${RUNNER_TEMP:?RUNNER_TEMP is not set: run this as a GitHub action step}/fitplan-venv"
"$python" -m venv "$venv"
# FITPLAN_PIP_ARGS: extra pip arguments (tests pass --no-deps); unset in a workflow
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet --disable-pip-version-check ${FITPLAN_PIP_ARGS:-} "$source"
echo "FITPLAN_BIN=$venv/bin/fitplan" >> "${GITHUB_ENV:?GITHUB_ENV is not set}"
echo "fitplan installed from $source into $venv"
