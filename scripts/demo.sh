#!/usr/bin/env bash
# The main job on the embedded defaults: train a counselling and a math QTHA adapter, evaluate them
# against the base model, then serve them.
#   DATA_DIR=../shared/data make demo    trains on the real data sets instead of the built-in ones
#   LORA=1 make demo                     also trains LoRA baselines (same r, targets, steps) for the reports
#   STEPS=120 make demo                  longer training;  SERVE=0 make demo   stop after the reports
# Re-running reuses finished runs (artifacts are immutable) and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUNS=${RUNS:-runs/demo}
STEPS=${STEPS:-30}
LIMIT=${LIMIT:-16}
PORT=${PORT:-8000}
export QTHA_REGISTRY=${QTHA_REGISTRY:-$RUNS/registry.db}
mkdir -p "$RUNS"

if [[ -n "${DATA_DIR:-}" ]]; then
  COUNSEL_DATA="counselchat:$DATA_DIR/counselchat/counsel_chat.csv#train,esconv:$DATA_DIR/esconv/train.jsonl"
  MATH_DATA="gsm8k:$DATA_DIR/gsm8k/train.jsonl"
  COUNSEL_EVAL="counselchat:$DATA_DIR/counselchat/counsel_chat.csv#test"
  MATH_EVAL="synthetic-math:$LIMIT"
else
  COUNSEL_DATA="synthetic-counseling:400"
  MATH_DATA="synthetic-math:400"
  COUNSEL_EVAL="synthetic-counseling:$LIMIT"
  MATH_EVAL="synthetic-math:$LIMIT"
fi

train() {  # name data method
  local out="$RUNS/$1"
  if [[ -d "$out/artifact" ]]; then
    echo "== $1: already trained ($out/artifact)"
    return
  fi
  local resume=()
  [[ -f "$out/config.json" ]] && resume=(--resume)
  echo "== training $1 ($3 on $2, $STEPS steps)"
  $BIN/qtha-train --data "$2" --method "$3" --r 4 --steps "$STEPS" --max-len 320 --out "$out" "${resume[@]}"
}

train counseling-qtha "$COUNSEL_DATA" qtha
train math-qtha "$MATH_DATA" qtha
COUNSEL_ARTS=("$RUNS/counseling-qtha/artifact")
MATH_ARTS=("$RUNS/math-qtha/artifact")
if [[ "${LORA:-0}" == "1" ]]; then
  train counseling-lora "$COUNSEL_DATA" lora
  train math-lora "$MATH_DATA" lora
  COUNSEL_ARTS+=("$RUNS/counseling-lora/artifact")
  MATH_ARTS+=("$RUNS/math-lora/artifact")
fi

echo "== evaluating against the base model"
$BIN/qtha-eval run --task counseling --data "$COUNSEL_EVAL" --limit "$LIMIT" \
  --artifacts "${COUNSEL_ARTS[@]}" --out "$RUNS/report-counseling"
$BIN/qtha-eval run --task synthetic-math --data "$MATH_EVAL" --limit "$LIMIT" --max-tokens 160 \
  --artifacts "${MATH_ARTS[@]}" --out "$RUNS/report-math"
echo "reports: $RUNS/report-counseling/report.html  $RUNS/report-math/report.html"

if [[ "${SERVE:-1}" == "0" ]]; then
  exit 0
fi
echo "== serving (Ctrl-C to stop)"
echo "chat page: http://127.0.0.1:$PORT/ui"
echo "API:       http://127.0.0.1:$PORT/v1  (OpenAI-compatible)"
echo "try:       curl -s http://127.0.0.1:$PORT/v1/chat/completions -H 'Content-Type: application/json' \\"
echo "             -d '{\"model\": \"auto\", \"messages\": [{\"role\": \"user\", \"content\": \"I feel anxious before exams\"}]}'"
exec $BIN/qtha-serve --adapter counseling="$RUNS/counseling-qtha/artifact" --adapter math="$RUNS/math-qtha/artifact" \
  --host 127.0.0.1 --port "$PORT"
