#!/usr/bin/env bash
# Stage the finished runs of study v2 (those with an evaluation marker) and the report, nothing else:
# a run still training is not committed, so a fresh clone trains it again from its start.
set -euo pipefail
cd "$(dirname "$0")"
for marker in runs/*/study-eval*.json; do
  [ -e "$marker" ] || continue
  d=$(dirname "$marker")
  git add -- "$d"/study-eval*.json "$d"/summary.json "$d"/metrics.jsonl 2>/dev/null || git add -- "$marker"
done
[ -d report ] && git add -- report
git add -- .gitignore commit-finished.sh
