#!/usr/bin/env bash
# The first call on a GPU machine: at most 9 minutes, the most important things first, each
# stage with its own time budget and its result written to $OUT before the next one starts.
#   a. tests  FIRST_TEST (tensor_core_gemms_give_the_same_bits_every_run, in auto), then every
#             test executable of the payload, once per TEST_MODES (f32, auto), those of
#             SERIAL_TESTS (tests/ops) also with --test-threads 1; a run past TEST_S is a stall
#             and its record names the test(s) that had not finished
#   b. w16    the width-16 reproduction (benches/gpu/reproduce.sh's schedule: ResNet18-CIFS, 15
#             clean + 4 PGD-10 epochs, milestone 3, batch 128, seed 0, the JPEG CIFAR-10, then
#             natural and PGD-20 on the whole test set), once per REPRO_PRECISIONS (f32, auto)
#   c. bench  `cifs-wgpu bench` in f32 and in auto beside PyTorch's default and --amp
#             (benches/reference/pytorch_step.py), rounds interleaved
#   d. w64    the width-64 reproduction in W64_PRECISION, in the time left (in practice a second call)
# Every call continues where the last one stopped: the state (STATE, runs/first-call: ignored by
# git, so it stays on a warm device machine between calls) says which steps finished, training
# resumes from its last epoch (`train --resume`), and $OUT/state.tar.gz carries the state to a
# fresh machine: put it at .gpu/state.tar.gz before the next call (the newer state wins).
#
# Here first: `bash benches/gpu/pack.sh --data /path/to/cifar10-jpeg.tar.xz` (the payload: binary,
# test executables, fixtures, the JPEG CIFAR-10, about 50 MiB with the tracked tree); then the
# device call carries [".gl", ".gpu"], timeout_s 570, command `bash benches/gpu/first-call.sh`.
# Without a GPU, the same call on lavapipe at tiny sizes: docs/bench/README.md, "Rehearsal".
#
# What comes back in $OUT (3 files): summary.txt (the records of every stage so far),
# results.tar.gz (the state folder without checkpoints: test logs and records, the runs'
# config.json, metrics.jsonl, curves, eval.json and logs, the bench JSON) and state.tar.gz (the
# same plus last.safetensors of unfinished runs under 15 MiB: width 16 (about 7 MB) resumes on a
# fresh machine, width 64's (about 110 MB) stays on a warm one only).
#
# Knobs (the defaults are the real sizes):
#   CALL_S (530)             the whole call; every stage stops at it
#   TESTS_S (170)            stage a; TEST_S (75) one executable's run, past it a stall
#   TEST_MODES ("f32 auto")  each mode's extra environment is TEST_ENV_<mode>: f32 none, auto
#                            CIFS_WGPU_REQUIRE_TENSOR_CORES=1 (a tensor-core test that would skip fails)
#   SERIAL_TESTS ("test-test-ops")  also run with --test-threads 1; TEST_ARGS: libtest arguments
#                            for every run (a name filter, say)
#   W16_S (150)              stage b, each precision; REPRO_PRECISIONS ("f32 auto"), W16_WIDTH (16)
#   CLEAN_EPOCHS (15) EPOCHS (4) MILESTONES (3) BATCH (128) SEED (0) EVAL_LIMIT (10000)
#   TRAIN_EXTRA              more `train` flags (--limit-train N for a rehearsal)
#   BENCH_S (100)            stage c; BENCH_STEP_S (60) one bench; ROUNDS (2) BENCH_MODEL
#   (resnet18-cifs) BENCH_WIDTH (64) BENCH_BATCH (128) STEPS (20) WARMUP (3) PY_DEVICE (cuda;
#   none skips PyTorch)
#   W64_WIDTH (64) W64_PRECISION (decide: auto when width 16's auto run is within a point of
#   f32's on natural and on PGD-20 accuracy, else f32) W64_MIN_S (60: starts only with that left)
#   STATE (runs/first-call)  EGL_ICD (1; 0 skips the NVIDIA EGL manifest and the packed loader)
#   CIFS_BIN and DATA_DIR (default: from the .gpu payload), CIFS_FLAGS (flags before every command)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute: the packing runs from $STATE
STATE=${STATE:-runs/first-call}
call_deadline=$(( $(date +%s) + ${CALL_S:-530} ))
S=$OUT/summary.txt
say() { echo "$*" | tee -a "$S"; }

# --- setup: the payload, the data, the state -------------------------------------------------
if [ -z "${CIFS_BIN:-}" ]; then
    [ -f .gpu/payload.tar.xz ] || { say "no .gpu/payload.tar.xz: run benches/gpu/pack.sh --data DATA first"; exit 2; }
    # shellcheck source=benches/gpu/egl-icd.sh
    . benches/gpu/egl-icd.sh
    unpack_payload
    CIFS_BIN=$W/bin/cifs-wgpu TEST_BIN=$W/bin
    [ -d "$W/fixtures" ] && export CIFS_FIXTURES=${CIFS_FIXTURES:-$W/fixtures}
else
    TEST_BIN=${TEST_BIN:-} broot=$PWD
fi
export CIFS_WGPU_ADAPTER=${CIFS_WGPU_ADAPTER:-discrete} XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
if [ -z "${DATA_DIR:-}" ] && [ -f .gpu/cifar10-jpeg.tar.xz ]; then
    DATA_DIR=/tmp/cifar10-jpeg
    [ -d "$DATA_DIR/train" ] || { mkdir -p "$DATA_DIR" && tar -C "$DATA_DIR" -xJf .gpu/cifar10-jpeg.tar.xz; }
fi

# The state: "call N" and one "done KEY" line per finished step. The newer of the state left on
# this machine and the one put back at .gpu/state.tar.gz wins.
call_of() { local n; n=$(sed -n 's/^call //p' "$1" 2>/dev/null | tail -n 1); echo "${n:-0}"; }
mkdir -p "$STATE"
if [ -f .gpu/state.tar.gz ]; then
    incoming=$(tar -xzOf .gpu/state.tar.gz ./state 2>/dev/null | sed -n 's/^call //p' | tail -n 1)
    if [ "${incoming:-0}" -gt "$(call_of "$STATE/state")" ]; then
        rm -rf "$STATE" && mkdir -p "$STATE" && tar -C "$STATE" -xzf .gpu/state.tar.gz
        echo "state of call ${incoming} taken from .gpu/state.tar.gz"
    fi
fi
call=$(( $(call_of "$STATE/state") + 1 ))
touch "$STATE/state"; sed -i '/^call /d' "$STATE/state"; echo "call $call" >> "$STATE/state"
done_step() { grep -qxF "done $1" "$STATE/state"; }
mark_done() { echo "done $1" >> "$STATE/state"; }
export XDG_CACHE_HOME=$PWD/$STATE/cache  # the tuned tiles travel with the state
mkdir -p "$STATE/logs" "$STATE/tests" "$STATE/bench"
: > "$S"
say "== first call, part $call: $("$CIFS_BIN" --version 2>&1), $(nvidia-smi -L 2>/dev/null | head -n 1)"
for p in f32 auto; do "$CIFS_BIN" --precision "$p" info > "$STATE/logs/info-$p.txt" 2>&1; done
if ! grep -q '^chosen' "$STATE/logs/info-f32.txt"; then
    say "no adapter: $(tail -n 1 "$STATE/logs/info-f32.txt") (VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-unset})"; exit 3
fi
say "   adapter: $(grep -iE 'chosen|using' "$STATE/logs/info-f32.txt" | head -n 1 | sed 's/^ *//')"
say "   $(grep -iE 'precision:' "$STATE/logs/info-auto.txt" | head -n 1 | sed 's/^ *//')"

# --- budgets ----------------------------------------------------------------------------------
stage_deadline=$call_deadline
begin_stage() {  # begin_stage NAME SECONDS
    stage_deadline=$(( $(date +%s) + $2 )); [ "$stage_deadline" -gt "$call_deadline" ] && stage_deadline=$call_deadline
    say "== $1: $(( stage_deadline - $(date +%s) )) s"
}
stage_left() { echo $(( stage_deadline - $(date +%s) )); }
# The time a step may take: its own limit, or less where the stage ends sooner (then a timeout
# is a cut, redone next call, not a result).
step_limit() { local l; l=$(stage_left); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }

# What comes back, rewritten after every stage so that a call killed later still returns it.
pack_out() {
    (cd "$STATE" && tar -czf "$OUT/results.tar.gz" --exclude='*.safetensors' --exclude='*.part' --exclude=cache .)
    local -a drop=()
    # Checkpoints come back only for unfinished runs and under 15 MiB (16 MiB a file comes back),
    # and only the one --resume reads (last: at width 16 about 7 MB; best would add half that to
    # a carry that has about 10 MiB to spare).
    while IFS= read -r f; do drop+=(--exclude="./${f#"$STATE"/}"); done < <(
        find "$STATE" -name '*.safetensors' -size +15M
        for r in "$STATE"/w*/; do [ -f "$r/eval.json" ] && ls "$r"*.safetensors 2>/dev/null; done)
    (cd "$STATE" && tar -czf "$OUT/state.tar.gz" "${drop[@]}" --exclude='best.safetensors' --exclude='*.part' .)
}

# --- a. tests ---------------------------------------------------------------------------------
TEST_ENV_f32=${TEST_ENV_f32:-}
TEST_ENV_auto=${TEST_ENV_auto-CIFS_WGPU_REQUIRE_TENSOR_CORES=1}
# test_run MODE EXE THREADS: one run, its log and one record line (tests/records.tsv: mode, exe,
# threads, verdict, rc, seconds, result line, the test(s) that had not finished).
test_run() {
    local mode=$1 t=$2 threads=$3 n; n=$(basename "$2")
    local key=tests/$mode/$n/$threads log=$STATE/tests/$mode-$n-$threads.log
    done_step "$key" && return
    local limit; limit=$(step_limit "${TEST_S:-75}")
    [ "$limit" -lt 5 ] && { say "   $mode $n ($threads): no time left in the stage, next call"; return 1; }
    local -a env=() args=()
    local envvar="TEST_ENV_$mode"; read -r -a env <<< "${!envvar:-}"
    read -r -a args <<< "${TEST_ARGS:-}"
    [ "$threads" = serial ] && args+=(--test-threads 1)
    local s; s=$(date +%s)
    (cd "$broot" && env "${env[@]}" timeout -k 5 "$limit" "$t" "${args[@]}") > "$log" 2>&1
    local rc=$? secs=$(( $(date +%s) - s )) verdict=ok
    [ $rc -ne 0 ] && verdict=FAILED
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        if [ "$limit" -lt "${TEST_S:-75}" ]; then say "   $mode $n ($threads): cut by the stage's budget after ${secs}s, next call"; return 1; fi
        verdict=stall
    fi
    local result unfinished=""
    result=$(grep -E '^test result' "$log" | tail -n 1)
    if [ "$verdict" = stall ]; then
        # Every listed test without a result line had not finished (with one thread: the one running).
        (cd "$broot" && timeout 30 "$t" "${args[@]}" --list 2>/dev/null) | sed -n 's/: test$//p' | sort > "$log.all"
        grep -oE '^test .* \.\.\. (ok|FAILED|ignored)' "$log" | sed -E 's/^test (.*) \.\.\. .*/\1/' | sort > "$log.finished"
        unfinished=$(comm -23 "$log.all" "$log.finished" | tr '\n' ' ')
        local running; running=$(grep -E '^test .* \.\.\. *$' "$log" | tail -n 1 | sed -E 's/^test (.*) \.\.\. *$/\1/')
        [ -n "$running" ] && unfinished="running: $running; unfinished: $unfinished"
        rm -f "$log.all" "$log.finished"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$n" "$threads" "$verdict" "$rc" "$secs" "$result" "$unfinished" >> "$STATE/tests/records.tsv"
    say "$(printf '   %-4s %-26s %-8s %-6s rc=%-3s %4ss %s' "$mode" "$n" "$threads" "$verdict" "$rc" "$secs" "${result#test result: }")"
    [ "$verdict" = stall ] && say "        stalled: ${unfinished:0:400}"
    [ "$verdict" = FAILED ] && grep -E '^test .* FAILED|panicked' "$log" | head -n 4 | sed 's/^/        /' | tee -a "$S"
    mark_done "$key"
}
if [ -n "$TEST_BIN" ]; then
    begin_stage "a. tests ($(find "$TEST_BIN" -name 'test-*' | wc -l) executables x ${TEST_MODES:-f32 auto})" "${TESTS_S:-170}"
    # First of all the test that shows a race in the tensor-core GEMMs' workgroup barriers
    # (different bits run after run): a failure there is a race, not noise (docs/bench/README.md).
    [ -x "$TEST_BIN/test-test-ops" ] && TEST_ARGS="${FIRST_TEST-tensor_core_gemms_give_the_same_bits_every_run}" \
        test_run auto "$TEST_BIN/test-test-ops" first
    for mode in ${TEST_MODES:-f32 auto}; do
        for t in "$TEST_BIN"/test-*; do
            test_run "$mode" "$t" parallel || break 2
            case " ${SERIAL_TESTS:-test-test-ops} " in *" $(basename "$t") "*) test_run "$mode" "$t" serial || break 2 ;; esac
        done
    done
else
    say "== a. tests: no test executables (CIFS_BIN given without TEST_BIN)"
fi
pack_out

# --- b. the width-16 reproduction -------------------------------------------------------------
# repro NAME WIDTH PRECISION SECONDS: benches/gpu/reproduce.sh in RUN=$STATE/NAME, AutoAttack left
# out; finished once eval.json is there.
repro() {
    local name=$1 width=$2 precision=$3 run=$STATE/$1
    done_step "$name" && return 0
    if [ -z "${DATA_DIR:-}" ] || [ ! -d "$DATA_DIR/train" ]; then
        say "   $name: no CIFAR-10 JPEG folder: pack it with benches/gpu/pack.sh --data cifar10-jpeg.tar.xz (or set DATA_DIR)"
        return 1
    fi
    # A run whose checkpoint stayed on another machine cannot resume: it starts again.
    if [ -f "$run/metrics.jsonl" ] && [ ! -f "$run/last.safetensors" ] && [ ! -f "$run/eval.json" ]; then
        say "   $name: its checkpoint stayed on an earlier machine; the run starts again"
        mv "$run" "$run.lost-$call"
    fi
    local limit; limit=$(step_limit "$4")
    [ "$limit" -lt 20 ] && { say "   $name: no time left, next call"; return 1; }
    local o=$STATE/logs/$name-call$call; mkdir -p "$o"
    OUT=$o RUN=$run WIDTH=$width CALL_S=$limit AA_LIMIT=0 CIFS_BIN=$CIFS_BIN DATA_DIR=$DATA_DIR \
        CIFS_FLAGS="${CIFS_FLAGS:-} --precision $precision" timeout -k 5 $((limit + 30)) bash benches/gpu/reproduce.sh > "$o/log" 2>&1
    grep -v '^== packed' "$o/summary.txt" 2>/dev/null | sed 's/^/   /' | tee -a "$S"
    rm -f "$o"/*.safetensors "$o"/*.tar.gz
    [ -f "$run/eval.json" ] && mark_done "$name"
}
for p in ${REPRO_PRECISIONS:-f32 auto}; do
    begin_stage "b. width ${W16_WIDTH:-16} in $p" "${W16_S:-150}"
    repro "w${W16_WIDTH:-16}-$p" "${W16_WIDTH:-16}" "$p" "${W16_S:-150}"
    pack_out
done

# --- c. the step bench ------------------------------------------------------------------------
# bench_run ROUND VARIANT: ours in f32 or auto, or PyTorch (default and --amp in one process).
bench_run() {
    local round=$1 v=$2 key=bench/r$1/$2 json=$STATE/bench/$2-r$1.json log=$STATE/bench/$2-r$1.log
    done_step "$key" && return
    local limit; limit=$(step_limit "${BENCH_STEP_S:-60}")
    [ "$limit" -lt 10 ] && { say "   bench $v round $round: no time left, next call"; return 1; }
    local -a size=(--model "${BENCH_MODEL:-resnet18-cifs}" --width "${BENCH_WIDTH:-64}" --batch-size "${BENCH_BATCH:-128}"
        --steps "${STEPS:-20}" --warmup "${WARMUP:-3}" --json "$json")
    if [ "$v" = pytorch ]; then
        PYTHONUNBUFFERED=1 timeout -k 5 "$limit" python3 benches/reference/pytorch_step.py --device "${PY_DEVICE:-cuda}" --amp "${size[@]}" > "$log" 2>&1
    else
        # shellcheck disable=SC2086  # CIFS_FLAGS is a list of flags
        timeout -k 5 "$limit" "$CIFS_BIN" ${CIFS_FLAGS:-} --precision "$v" bench "${size[@]}" > "$log" 2>&1
    fi
    local rc=$?
    if { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && [ "$limit" -lt "${BENCH_STEP_S:-60}" ]; then
        say "   bench $v round $round: cut by the stage's budget, next call"; return 1
    fi
    [ $rc -ne 0 ] && say "   bench $v round $round rc=$rc: $(tail -n 1 "$log")"
    mark_done "$key"
}
begin_stage "c. step bench (${BENCH_MODEL:-resnet18-cifs} width ${BENCH_WIDTH:-64} batch ${BENCH_BATCH:-128})" "${BENCH_S:-100}"
variants="f32 auto"; [ "${PY_DEVICE:-cuda}" != none ] && variants="$variants pytorch"
for round in $(seq 1 "${ROUNDS:-2}"); do
    for v in $variants; do bench_run "$round" "$v" || break 2; done
done
python3 - "$STATE"/bench/*.json <<'PY' 2>&1 | sed 's/^/   /' | tee -a "$S"
import json, sys
for path in sys.argv[1:]:
    try:
        d = json.load(open(path))
    except (OSError, ValueError):
        continue
    rows = {}
    for r in d["results"]:
        rows.setdefault(r.get("precision") or d.get("precision"), {})[r["step"]] = r
    for precision, r in rows.items():
        cell = lambda k: f"{r[k]['wall_median_ms']:9.2f}" if k in r else "        -"
        print(f"{path.rsplit('/', 1)[-1]:<18s} {str(precision):<8s} pgd10 {cell('pgd10-at-step')} ms  clean {cell('clean-train-step')}"
              f"  eval {cell('eval-forward')}")
PY
pack_out

# --- d. the width-64 reproduction (in the time left; a second call) ----------------------------
w64_precision() {  # auto when width 16's auto run is within a point of f32's, natural and PGD-20
    [ "${W64_PRECISION:-decide}" != decide ] && { echo "$W64_PRECISION"; return; }
    python3 - "$STATE/w${W16_WIDTH:-16}-f32/eval.json" "$STATE/w${W16_WIDTH:-16}-auto/eval.json" <<'PY' 2>/dev/null || echo f32
import json, sys
acc = [{r["attack"]: r["accuracy"] for r in json.load(open(p))} for p in sys.argv[1:]]
print("auto" if all(abs(acc[0][k] - acc[1][k]) * 100 <= 1.0 for k in acc[0]) else "f32")
PY
}
left=$(( call_deadline - $(date +%s) ))
if [ -f "$STATE/w${W16_WIDTH:-16}-f32/eval.json" ] && [ -f "$STATE/w${W16_WIDTH:-16}-auto/eval.json" ]; then
    say "== width ${W16_WIDTH:-16}, f32 vs auto: $(python3 - "$STATE/w${W16_WIDTH:-16}-f32/eval.json" "$STATE/w${W16_WIDTH:-16}-auto/eval.json" <<'PY'
import json, sys
for p in sys.argv[1:]:
    print(p.split("/")[-2], ", ".join("%s %.2f%%" % (r["attack"], 100 * r["accuracy"]) for r in json.load(open(p))), end="; ")
PY
)width ${W64_WIDTH:-64} runs in $(w64_precision)"
fi
if [ "$left" -ge "${W64_MIN_S:-60}" ]; then
    p=$(w64_precision)
    begin_stage "d. width ${W64_WIDTH:-64} in $p" "$left"
    repro "w${W64_WIDTH:-64}-$p" "${W64_WIDTH:-64}" "$p" "$left"
else
    say "== d. width ${W64_WIDTH:-64}: ${left} s left in this call, under W64_MIN_S (${W64_MIN_S:-60}); next call"
fi
pack_out
say "== call $call done: $(sed -n 's/^done //p' "$STATE/state" | wc -l) steps finished; \$OUT: $(find "$OUT" -maxdepth 1 -type f -printf '%f ')"
