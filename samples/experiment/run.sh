#!/usr/bin/env bash
# The issue-7 experiment, from scratch, with the project's own CLI: a demo world built from the fixture faces
# without obama2.jpg, guided towards obama2.jpg with the face-api identity loss, none vs x0 vs lcm previews.
# Phases (all by default; name some to run only those): sweep (step sizes on a few seeds), grid (guide steps 5,
# 10, 20 × the chosen step sizes on all seeds), multi (guidance at steps 5,10,15,20 of one run), confirm (the
# grid's two largest lcm − x0 differences, re-measured on fresh seeds), perceptual (the blur-sensitive guide),
# preview (fig. 2), decided (at which step a sample's identity is fixed), tables.
# Nothing is written into the project: photos, world and results go under $OUT.
# Usage: samples/experiment/run.sh [sweep] [grid] [multi] [confirm] [perceptual] [preview] [decided] [tables]
# Environment: OUT (default /tmp/lookahead-experiment), FACES (default ../shared/fixtures/faces beside the
# repo), SEEDS (default 0-31), SWEEP_SEEDS (0-7), CONFIRM_SEEDS (32-127), SWEEP_LRS, GRID_LRS (chosen from the
# sweep: the range where samples go from all typical to a quarter off-distribution), GRID_STEPS, MULTI_LRS,
# PERCEPTUAL_LRS. Results: samples/experiment/RESULTS.md.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
FACES=${FACES:-$REPO/../shared/fixtures/faces}
OUT=${OUT:-/tmp/lookahead-experiment}
SEEDS=${SEEDS:-0-31}
SWEEP_SEEDS=${SWEEP_SEEDS:-0-7}
SWEEP_LRS=${SWEEP_LRS:-0.002 0.005 0.01 0.02 0.05}
GRID_LRS=${GRID_LRS:-0.005 0.01 0.02}
GRID_STEPS=${GRID_STEPS:-5 10 20}
MULTI_LRS=${MULTI_LRS:-0.005 0.01}
CONFIRM_SEEDS=${CONFIRM_SEEDS:-32-127}
PERCEPTUAL_LRS=${PERCEPTUAL_LRS:-0.01 0.02}
REF=$FACES/obama2.jpg
WORLD=$OUT/world
RUNS=$OUT/runs
PHASES=${*:-sweep grid multi confirm perceptual preview decided tables}
lookahead() { "$REPO/bin/run.js" "$@"; }
has() { [[ " $PHASES " == *" $1 "* ]]; }

[ -f "$REF" ] || { echo "no $REF: set FACES to the fixture faces folder" >&2; exit 1; }
mkdir -p "$RUNS"
(cd "$REPO" && npx tsc -p tsconfig.json)

# the world: every fixture face except the reference (another photo of the reference's identity stays in)
if [ ! -f "$WORLD/world.json" ]; then
  rm -rf "$OUT/faces" && mkdir -p "$OUT/faces"
  for f in "$FACES"/*; do [ "$(basename "$f")" = obama2.jpg ] || cp "$f" "$OUT/faces/"; done
  lookahead world build --world-images "$OUT/faces" --crop-faces -o "$WORLD"
fi

# one comparison: NAME LOSS then compare's flags; wall time in seconds beside its results
compare() {
  local name=$1 loss=$2
  shift 2
  [ -f "$RUNS/$name/summary.json" ] && { echo "$name: done already"; return; }
  local start=$SECONDS
  # --cfg 1: the demo world has no text conditioning, so CFG would only double the cost
  lookahead compare --models "$WORLD" --loss "$loss" --id-network faceapi --ref "$REF" --previews none,x0,lcm \
    --steps 50 --iters 10 --cfg 1 -o "$RUNS/$name" "$@" 2>"$RUNS/$name.log" | tee "$RUNS/$name.txt"
  echo $((SECONDS - start)) >"$RUNS/$name/wall_s.txt"
  echo "$name: $(cat "$RUNS/$name/wall_s.txt") s"
}

if has sweep; then
  for lr in $SWEEP_LRS; do compare "sweep-id-step10-lr$lr" id --seeds "$SWEEP_SEEDS" --guide-step 10 --lr "$lr"; done
fi
if has grid; then
  for step in $GRID_STEPS; do
    for lr in $GRID_LRS; do compare "grid-id-step$(printf %02d "$step")-lr$lr" id --seeds "$SEEDS" --guide-step "$step" --lr "$lr"; done
  done
fi
if has multi; then
  for lr in $MULTI_LRS; do compare "multi-id-steps5,10,15,20-lr$lr" id --seeds "$SEEDS" --guide-steps 5,10,15,20 --lr "$lr"; done
fi
if has confirm; then
  # fixed before looking at these seeds: step 10 lr 0.005 (lcm lower face-api distance) and step 20 lr 0.005 (x0 higher held-apart cosine)
  for step in 10 20; do compare "confirm-id-step$step-lr0.005" id --seeds "$CONFIRM_SEEDS" --guide-step "$step" --lr 0.005; done
fi
if has perceptual; then
  for lr in $PERCEPTUAL_LRS; do compare "perceptual-step10-lr$lr" perceptual --seeds "$SEEDS" --guide-step 10 --lr "$lr"; done
fi
if has preview; then
  for seed in 0 1; do lookahead preview --models "$WORLD" --cfg 1 --seed "$seed" --at 2,5,10,20 -o "$OUT/preview-seed$seed.png"; done
  lookahead preview --models "$WORLD" --cfg 1 --seed 1 --at 0,1,2,3 -o "$OUT/preview-early-seed1.png"
fi
if has decided; then
  (cd "$REPO" && node --import tsx samples/experiment/decided.ts "$WORLD" 0-127 0,1,2,5,10,20) | tee "$OUT/decided.md"
fi
if has tables; then
  (cd "$REPO" && node --import tsx samples/experiment/collect.ts "$RUNS") >"$OUT/tables.md"
  echo "wrote $OUT/tables.md"
fi
