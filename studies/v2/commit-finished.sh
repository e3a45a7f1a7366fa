#!/usr/bin/env bash
# Stage study v2's finished work and the report, nothing else: each trained run's summary, config and
# loss curves (a sweep run is finished when its summary exists), and each evaluated run's marker. A run
# still training is not committed, so a fresh clone trains it again from its start; an evaluated run
# whose marker is missing is trained again too (its weights stay local), so its summary is harmless.
set -euo pipefail
cd "$(dirname "$0")"
for summary in runs/*/summary.json; do
  [ -e "$summary" ] || continue
  d=$(dirname "$summary")
  git add -- "$d"/summary.json "$d"/config.json "$d"/metrics.jsonl
done
for marker in runs/*/study-eval*.json; do
  [ -e "$marker" ] && git add -- "$marker"
done
[ -d report ] && git add -- report
git add -- .gitignore commit-finished.sh
