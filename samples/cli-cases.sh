#!/usr/bin/env bash
# The cases of issue 12, run as a new user would run them: every bad input must give one clean line and a
# non-zero exit before any work (no output written, nothing built in the cache), and every good one must work.
# Runs the compiled CLI (npm run build first); writes only under a temporary folder; about 5 minutes on 2 cores.
# Usage: samples/cli-cases.sh          prints one line per case and exits 1 if any case fails
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lookahead-cases-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export LOOKAHEAD_CACHE=$WORK/cache LOOKAHEAD_MODELS= FORCE_COLOR=0
cd "$WORK"
mkdir out
lookahead() { node "$REPO/bin/run.js" "$@"; }
failed=0
pass() { echo "ok    $1"; }
fail() { echo "FAIL  $1: $2"; failed=$((failed + 1)); }

# refuse REGEX ARGS...: exit ≠ 0, one line on stderr matching REGEX (under --json: one JSON line on stdout
# whose "exit" is the exit code), nothing written under out/, nothing built in the cache
refuse() {
  local regex=$1; shift
  local name="lookahead $*"
  lookahead "$@" >stdout 2>stderr
  local code=$?
  local text; if [[ " $* " == *" --json "* ]]; then text=$(cat stdout); else text=$(cat stderr); fi
  if [ $code -eq 0 ]; then fail "$name" "exit 0"; return; fi
  if [ "$(printf '%s\n' "$text" | wc -l)" -ne 1 ]; then fail "$name" "not one line: $text"; return; fi
  if ! grep -Eq -- "$regex" <<<"$text"; then fail "$name" "message '$text' does not match /$regex/"; return; fi
  if [[ " $* " == *" --json "* ]] && [ "$(node -e 'console.log(JSON.parse(process.argv[1]).error.exit)' "$text")" != "$code" ]; then fail "$name" "JSON exit differs from $code"; return; fi
  if [ -n "$(ls -A out)" ]; then fail "$name" "wrote $(ls out)"; rm -rf out/*; return; fi
  if [ -d cache ] && [ -n "$(ls -A cache)" ]; then fail "$name" "built $(ls cache) in the cache"; rm -rf cache; return; fi
  pass "$name → exit $code: $text"
}

# works ARGS...: exit 0
works() {
  local name="lookahead $*"
  if lookahead "$@" >stdout 2>stderr; then pass "$name"; else fail "$name" "exit $?: $(tail -n 3 stderr)"; fi
}

touch a-file.png
guide=(guide --world demo --ref world:dev)
echo "— bad input: one line, non-zero exit, before any work"
refuse "models work at 256 only" "${guide[@]}" --size 128 -o out/o.png
refuse "models work at 256 only" generate --world demo --size 128 -o out/o.png
refuse "models work at 256 only" "${guide[@]}" --size 512 --dry-run
refuse "--size 0: expected an integer ≥ 32" "${guide[@]}" --size 0 -o out/o.png
refuse "multiple of 32" world build --size 200 -o out/world
refuse "is a folder" "${guide[@]}" -o "$WORK"
refuse "a-file.png is a file, not a folder" "${guide[@]}" -o a-file.png/out.png
refuse "name a .png, .jpg or .webp file" "${guide[@]}" -o out/o.gif
refuse "is a file: name a folder" compare --world demo --ref world:dev -o a-file.png
refuse "without empty items" "${guide[@]}" --guide-steps "" -o out/o.png
refuse "a is not a non-negative integer" "${guide[@]}" --guide-steps 5,a -o out/o.png
refuse "10 is named twice" "${guide[@]}" --guide-steps 10,10 -o out/o.png
refuse "step 60 is outside 0…49" "${guide[@]}" --guide-steps 60 -o out/o.png
refuse "without empty items" preview --world demo --at "" -o out/o.png
refuse "lcm is named twice" compare --world demo --ref world:dev --previews lcm,lcm -o out/c
refuse "--ref-text is the target of a clip loss" "${guide[@]}" --ref-text "a face" --loss id -o out/o.png
refuse "Nonexistent flag: --seed" compare --world demo --ref world:dev --seed 3 -o out/c
refuse "unknown guide \"idd\"" "${guide[@]}" --loss idd -o out/o.png
refuse "--lr nan: expected a positive number" "${guide[@]}" --lr nan -o out/o.png --json
refuse "--iters -2: expected an integer ≥ 0" "${guide[@]}" --iters -2 -o out/o.png --json
refuse "--device tpu: expected one of cpu, cuda" "${guide[@]}" --device tpu -o out/o.png
refuse "needs --ref IMAGE" guide --world demo -o out/o.png
refuse "there is no comparison there" compare --world demo --ref world:dev --resume out
refuse "expected a duration" cache --older-than 3x
if node -e "import('$REPO/dist/src/onnx/session.js').then(s => process.exit(s.cudaInstalled() ? 0 : 1))"; then
  echo "skip  info --device cuda (CUDA is installed here)"
else
  lookahead info --device cuda >stdout 2>stderr && fail "lookahead info --device cuda" "exit 0 without CUDA" || pass "lookahead info --device cuda → exit $?: $(cat stderr)"
fi

echo "— good input works"
works --version
works help
works help guide
works "${guide[@]}" --steps 10 --guide-steps 2 --iters 1 -o out/guided.jpg
[ "$(head -c 2 out/guided.jpg | od -An -tx1 | tr -d ' ')" = "ffd8" ] && pass "out/guided.jpg is a JPEG" || fail "out/guided.jpg" "not JPEG bytes"
grep -q "→" stderr && pass "the loss is reported as A → B: $(grep '→' stderr)" || fail "loss line" "$(cat stderr)"
works generate --world demo --steps 4 -o out/plain.webp
works compare --world demo --ref world:dev --steps 10 --guide-steps 2 --iters 1 --seeds 0-1 --previews none,lcm -o out/c
works compare --world demo --ref world:dev --steps 10 --guide-steps 2 --iters 1 --seeds 0-2 --previews none,lcm --resume out/c
[ "$(wc -l <out/c/runs.jsonl)" -eq 6 ] && pass "--resume ran only the 2 new runs (6 in runs.jsonl)" || fail "--resume" "$(wc -l <out/c/runs.jsonl) runs"
works cache
works cache clean --older-than 1d

echo "— a terminal that reports 0 columns: progress ends; SIGTERM is honoured"
# script(1) gives the CLI a terminal; stty sets its width to 0 columns
timeout 300 script -qec "stty cols 0; node $REPO/bin/run.js ${guide[*]} --steps 10 --guide-steps 2 --iters 2 -o out/tty.png" tty.log >/dev/null
code=$?
size=$(stat -c %s tty.log)
[ $code -eq 0 ] && [ "$size" -lt 100000 ] && pass "0 columns: exit 0, $size bytes of output" || fail "0 columns" "exit $code, $size bytes"
node "$REPO/bin/run.js" "${guide[@]}" --iters 200 -o out/killed.png 2>term.log &
pid=$!
sleep 8
kill -TERM $pid
wait $pid
code=$?
[ $code -eq 143 ] && [ ! -e out/killed.png ] && grep -q interrupted term.log && pass "SIGTERM: exit 143, nothing written" || fail "SIGTERM" "exit $code: $(tail -c 300 term.log)"

echo "$failed failed"
[ $failed -eq 0 ]
