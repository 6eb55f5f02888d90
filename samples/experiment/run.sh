#!/usr/bin/env bash
# The issue-13 experiment, from scratch, with the project's own CLI: a demo world of 23 identities (every face of the
# six group photos @vladmandic/face-api ships in demo/, plus the fixture photos without obama2.jpg), guided towards
# obama2.jpg's face with the face-api identity loss; none vs x0 vs lcm vs lcm with 2 preview steps vs best-of-N at
# guide steps before and after the step where identity is decided; with the linear codec and with the real TAESDXL.
# Phases (all by default; name some to run only those): world, taesd-world, decided, sweep, main, perceptual, taesd,
# tables.
# Nothing is written into the project: photos, worlds and results go under $OUT.
# Usage: samples/experiment/run.sh [world] [taesd-world] [decided] [sweep] [main] [perceptual] [taesd] [tables]
# Environment: OUT (default /tmp/lookahead-experiment-13), FIXTURES (default ../shared/fixtures beside the repo),
# SEEDS (0-63), SWEEP_SEEDS (0-7), SWEEP_LRS, LR (the main runs' step size: chosen from the sweep by the rule in
# RESULTS.md), BEFORE and AFTER (guide steps, from the decided step by that rule), TAESD_BEFORE and TAESD_AFTER (the TAESD
# world's guide steps; default: by the same rule from its decided.ts table), TAESD_SEEDS (0-31),
# PERCEPTUAL_SEEDS (0-31). Results: samples/experiment/RESULTS.md.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
FIXTURES=${FIXTURES:-$REPO/../shared/fixtures}
GROUP_PHOTOS=$REPO/node_modules/@vladmandic/face-api/demo
OUT=${OUT:-/tmp/lookahead-experiment-13}
SEEDS=${SEEDS:-0-63}
SWEEP_SEEDS=${SWEEP_SEEDS:-0-7}
SWEEP_LRS=${SWEEP_LRS:-0.005 0.01 0.02}
LR=${LR:-0.01}
BEFORE=${BEFORE:-2}
AFTER=${AFTER:-10}
TAESD_SEEDS=${TAESD_SEEDS:-0-31}
PERCEPTUAL_SEEDS=${PERCEPTUAL_SEEDS:-0-31}
REF=$OUT/obama2-face.png
RUNS=$OUT/runs
PHASES=${*:-world taesd-world decided sweep main perceptual taesd tables}
lookahead() { "$REPO/bin/run.js" "$@"; }
tsx() { (cd "$REPO" && node --import tsx "$@"); }
has() { [[ " $PHASES " == *" $1 "* ]]; }

[ -f "$FIXTURES/faces/obama2.jpg" ] || { echo "no $FIXTURES/faces/obama2.jpg: set FIXTURES to the fixtures folder" >&2; exit 1; }
mkdir -p "$RUNS"
(cd "$REPO" && npx tsc -p tsconfig.json)

# the worlds: every face of the group photos and the fixture faces but the reference; the reference cropped as they are
if has world || [ ! -f "$OUT/world/world.json" ]; then
  rm -rf "$OUT/faces" && mkdir -p "$OUT/faces"
  cp "$GROUP_PHOTOS"/sample*.jpg "$OUT/faces/"
  for f in "$FIXTURES"/faces/*; do [ "$(basename "$f")" = obama2.jpg ] || cp "$f" "$OUT/faces/"; done
  tsx samples/experiment/crop-face.ts "$FIXTURES/faces/obama2.jpg" 256 "$REF"
  [ -f "$OUT/world/world.json" ] || lookahead world build --world-images "$OUT/faces" --crop-faces --every-face -o "$OUT/world"
fi
if (has taesd-world || has taesd) && [ ! -f "$OUT/world-taesd/world.json" ]; then
  lookahead world build --world-images "$OUT/faces" --crop-faces --every-face --codec taesd --taesd "$FIXTURES/taesd" -o "$OUT/world-taesd"
fi

# one comparison: NAME WORLD LOSS METHODS then compare's flags; wall time in seconds beside its results
compare() {
  local name=$1 world=$2 loss=$3 methods=$4
  shift 4
  [ -f "$RUNS/$name/summary.json" ] && { echo "$name: done already"; return; }
  local start=$SECONDS
  local folder=(-o "$RUNS/$name")
  [ -f "$RUNS/$name/settings.json" ] && folder=(--resume "$RUNS/$name")
  # --cfg 1: the demo world has no text conditioning, so CFG would only double the cost
  lookahead compare --models "$world" --loss "$loss" --id-network faceapi --ref "$REF" --previews "$methods" \
    --steps 50 --iters 10 --cfg 1 "${folder[@]}" "$@" 2>"$RUNS/$name.log" | tee "$RUNS/$name.txt"
  echo $((SECONDS - start)) >"$RUNS/$name/wall_s.txt"
  echo "$name: $(cat "$RUNS/$name/wall_s.txt") s"
}
# every method at a guide step: none, x0, lcm, best in one comparison, lcm with two preview steps in another
# (the same seeds, so collect.ts pairs them by seed)
methods() {
  local name=$1 world=$2 loss=$3 seeds=$4
  shift 4
  compare "$name" "$world" "$loss" none,x0,lcm,best --seeds "$seeds" "$@"
  compare "$name-lcm2" "$world" "$loss" lcm --preview-steps 2 --seeds "$seeds" "$@"
}

if has decided; then
  tsx samples/experiment/decided.ts "$OUT/world" "$SEEDS" 0,1,2,3,5,10,20 | tee "$OUT/decided.md"
  if [ -f "$OUT/world-taesd/world.json" ]; then tsx samples/experiment/decided.ts "$OUT/world-taesd" "$TAESD_SEEDS" 0,1,2,3,5,10,20 | tee "$OUT/decided-taesd.md"; fi
fi
# the rule of RESULTS.md: the latest measured step where the x0 estimate's identity agrees with the final one in ≤ 80% of seeds
before_decided() { awk -F'|' '/^\| [0-9]/ { split($3, f, "/"); if (f[1] <= 0.8 * f[2]) step = $2 } END { gsub(/ /, "", step); print step }' "$1"; }
if has sweep; then
  for lr in $SWEEP_LRS; do compare "sweep-id-step$BEFORE-lr$lr" "$OUT/world" id none,x0,lcm --seeds "$SWEEP_SEEDS" --guide-step "$BEFORE" --lr "$lr"; done
fi
if has main; then
  for step in $BEFORE $AFTER; do methods "main-id-step$(printf %02d "$step")-lr$LR" "$OUT/world" id "$SEEDS" --guide-step "$step" --lr "$LR"; done
fi
if has perceptual; then
  methods "perceptual-step$(printf %02d "$BEFORE")-lr$LR" "$OUT/world" perceptual "$PERCEPTUAL_SEEDS" --guide-step "$BEFORE" --lr "$LR"
fi
# the decided step d: the first measured step where the agreement reaches 95 %; "after" it is 2·d
decided_step() { awk -F'|' '/^\| [0-9]/ { split($3, f, "/"); if (step == "" && f[1] >= 0.95 * f[2]) step = $2 } END { gsub(/ /, "", step); print step }' "$1"; }
if has taesd; then
  before=${TAESD_BEFORE:-$(before_decided "$OUT/decided-taesd.md")}
  after=${TAESD_AFTER:-$((2 * $(decided_step "$OUT/decided-taesd.md")))}
  for step in ${before:-0} $after; do
    methods "taesd-id-step$(printf %02d "$step")-lr$LR" "$OUT/world-taesd" id "$TAESD_SEEDS" --guide-step "$step" --lr "$LR"
  done
fi
if has tables; then
  # the identity metrics rescored where the detector misses the blurred faces (held-apart.ts); obama: the identity
  # a sample guided towards obama2.jpg should land on (RESULTS.md, "Reference")
  tsx samples/experiment/held-apart.ts "$REF" "$RUNS"
  tsx samples/experiment/collect.ts "$RUNS" obama >"$OUT/tables.md"
  echo "wrote $OUT/tables.md"
fi
