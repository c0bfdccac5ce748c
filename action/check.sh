#!/usr/bin/env bash
# The action's check step: fitplan check once per report, all from the same budgets and predictions:
#   --format github   to the log: an error annotation on the line of each broken limit
#   --format markdown appended to $GITHUB_STEP_SUMMARY: the verdict, then every budget with its headroom
#   --format json     to $RUNNER_TEMP/fitplan-report.json, kept as an artifact (output `report`)
#   --format INPUT_FORMAT to the log, unless it is github
# Exits as fitplan check does: 0 every budget holds, 1 one breaks (or worsened, with fail-on-regression),
# 2 a bad input or budgets file (also shown as an error annotation).
set -uo pipefail
fitplan="${FITPLAN_BIN:-fitplan}"
format="${INPUT_FORMAT:-text}"
case "$format" in
  text|markdown|json|junit|github) ;;
  *) echo "::error title=fitplan check::format must be text, markdown, json, junit or github, not '$format'"
     exit 2 ;;
esac
args=()
[ -n "${INPUT_CONFIG:-}" ] && args+=(--config "$INPUT_CONFIG")
[ -n "${INPUT_PROFILES:-}" ] && args+=(--profiles "$INPUT_PROFILES")
args+=(--baseline-tolerance "${INPUT_BASELINE_TOLERANCE:-5}")
case "${INPUT_FAIL_ON_REGRESSION:-true}" in
  true) ;;
  false) args+=(--no-fail-on-regression) ;;
  *) echo "::error title=fitplan check::fail-on-regression must be true or false, not '${INPUT_FAIL_ON_REGRESSION}'"
     exit 2 ;;
esac
if [ -n "${INPUT_BASELINE:-}" ]; then
  if [ -f "$INPUT_BASELINE" ]; then
    args+=(--baseline "$INPUT_BASELINE")
  else
    echo "::notice title=fitplan check::no baseline at $INPUT_BASELINE: the budgets are checked against their limits only"
  fi
fi
report="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/fitplan-report.json"
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT

annotations="$("$fitplan" check "${args[@]}" --format github 2> "$errors")"
status=$?
printf '%s\n' "$annotations"
cat "$errors" >&2  # warnings (a baseline that matches nothing) and errors, always shown
if [ "$status" -ge 2 ] || { [ "$status" -eq 1 ] && ! grep -q '^::error ' <<< "$annotations"; }; then
  # a bad input or budgets file (fitplan's one line), or a crash: an annotation too, never "a budget broke"
  message="$(grep -m 1 '^fitplan: error: ' "$errors" || tail -n 1 "$errors")"
  message="${message//'%'/'%25'}"
  echo "::error title=fitplan check::${message:-fitplan check failed with exit $status}"
  [ "$status" -ge 2 ] || status=2
  exit "$status"
fi
"$fitplan" check "${args[@]}" --format json -o "$report" || true
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  "$fitplan" check "${args[@]}" --format markdown >> "$GITHUB_STEP_SUMMARY" || true
fi
if [ "$format" != github ]; then
  # budget names come from the repository's files (a pull request's too): no line of this report may act
  # as a workflow command, so GitHub stops reading them until the token it has never seen
  token="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
  echo "::stop-commands::$token"
  "$fitplan" check "${args[@]}" --format "$format" 2> /dev/null || true
  echo "::$token::"
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "report=$report"; [ "$status" -eq 0 ] && echo "ok=true" || echo "ok=false"; } >> "$GITHUB_OUTPUT"
fi
exit "$status"
