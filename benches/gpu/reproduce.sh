#!/usr/bin/env bash
# The reference's short schedule on the JPEG CIFAR-10, trained and evaluated on one GPU:
# ResNet18-CIFS, 15 clean epochs at lr 0.1, then 4 PGD-10 epochs with a fresh optimizer and the lr
# x0.1 after adversarial epoch 3; batch 128, seed 0; then the whole test set, natural and PGD-20
# (joint loss, eval's defaults), and AutoAttack on AA_LIMIT class-balanced test images.
# The reference code reached 62.4% natural / 36.8% PGD-20 with this schedule at width 64.
#
# First, here: `bash benches/gpu/pack.sh --data DIR` (builds the release binary and the test
# executables into .gpu with the JPEG CIFAR-10 folder DIR, a Vulkan loader into .gl); then on
# the device (carry [".gl", ".gpu"]):
#     WIDTH=64 bash benches/gpu/reproduce.sh
# Every call continues where the last one stopped: training resumes from the run's last epoch
# checkpoint (kept in the ignored runs/ folder, which stays on a warm device machine between
# calls), the final evaluation runs once training is complete, and each attack's result is kept,
# so a run too long for one call is finished by calling again with the same settings. CALL_S
# bounds this call's training and evaluation together (an epoch or an attack cut short is redone
# from its start next time).
#
# Without a GPU (a dry run on lavapipe, tiny sizes; no payload needed):
#     CIFS_FLAGS=--no-tune CIFS_BIN=target/release/cifs-wgpu DATA_DIR=/path/to/cifar10-jpeg WIDTH=4 BATCH=16 CLEAN_EPOCHS=1 \
#       EPOCHS=2 MILESTONES=1 TRAIN_EXTRA="--limit-train 32 --eval-limit 16 --attack-steps 2" EVAL_LIMIT=32 AA_LIMIT=10 \
#       AA_EXTRA="--iterations 5 --queries 50" \
#       OUT=/tmp/out bash benches/gpu/reproduce.sh
#
# Knobs: WIDTH (64), BATCH (128), CLEAN_EPOCHS (15), EPOCHS (4), MILESTONES (3), SEED (0), EVAL_LIMIT (10000),
# AA_LIMIT (500; 0 skips AutoAttack), AA_EXTRA (more autoattack flags), CALL_S (500 s), TRAIN_EXTRA (more train flags),
# CIFS_FLAGS (flags before the command, e.g. --no-tune: lavapipe spends minutes timing tiles),
# RUN (runs/reproduce-w$WIDTH), CIFS_BIN and DATA_DIR (default: from the .gpu payload).
# $OUT gets summary.txt and reproduce-w$WIDTH.tar.gz: config.json, metrics.jsonl, the curves,
# eval.json (and autoattack.json), train.log and eval logs; the checkpoint only where it is small
# enough to come back (under 15 MiB: width 16 and below), never for git.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
WIDTH=${WIDTH:-64} SEED=${SEED:-0}
RUN=${RUN:-runs/reproduce-w$WIDTH}
S=$OUT/summary.txt
# One device call is at most 9 minutes: every stage's time limit is what is left of CALL_S.
deadline=$(( $(date +%s) + ${CALL_S:-500} ))
left() { local l=$(( deadline - $(date +%s) )); [ "$l" -lt "$1" ] && l=$1; echo "$l"; }
say() { echo "$*" | tee -a "$S"; }

if [ -z "${CIFS_BIN:-}" ]; then
    [ -f .gpu/payload.tar.xz ] || { say "no .gpu/payload.tar.xz: run benches/gpu/pack.sh --data DIR first, or set CIFS_BIN and DATA_DIR"; exit 2; }
    . benches/gpu/egl-icd.sh
    unpack_payload
    CIFS_BIN=$W/bin/cifs-wgpu
fi
if [ -z "${DATA_DIR:-}" ]; then
    [ -f .gpu/cifar10-jpeg.tar.xz ] || { say "no .gpu/cifar10-jpeg.tar.xz: run benches/gpu/pack.sh --data DIR, or set DATA_DIR"; exit 2; }
    DATA_DIR=/tmp/cifar10-jpeg
    [ -d "$DATA_DIR/train" ] || { mkdir -p "$DATA_DIR" && tar -C "$DATA_DIR" -xJf .gpu/cifar10-jpeg.tar.xz; }
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/tunecache}
mkdir -p "$RUN"
say "== reproduce: width $WIDTH, run $RUN, $("$CIFS_BIN" info 2>&1 | grep -iE 'chosen|using' | head -n 1)"

# Training: the whole schedule in one `train` (it switches to the adversarial phase and its fresh
# optimizer by itself); --resume continues a run an earlier call left unfinished.
total=$(( ${CLEAN_EPOCHS:-15} + ${EPOCHS:-4} ))
done_epochs() { local n=0; [ -f "$RUN/metrics.jsonl" ] && n=$(grep -c '"epoch"' "$RUN/metrics.jsonl"); echo "${n:-0}"; }
if [ "$(done_epochs)" -lt "$total" ]; then
    resume=""; [ -f "$RUN/last.safetensors" ] && resume="--resume"
    s=$(date +%s)
    # Per-epoch evaluation on 1000 test images shows the curve; the final numbers come from `eval`.
    timeout "$(left 1)" "$CIFS_BIN" ${CIFS_FLAGS:-} train folder --data-dir "$DATA_DIR" --no-download --out "$RUN" \
        --model resnet18-cifs --width "$WIDTH" --clean-epochs "${CLEAN_EPOCHS:-15}" --epochs "${EPOCHS:-4}" \
        --milestones "${MILESTONES:-3}" --batch-size "${BATCH:-128}" --lr 0.1 --seed "$SEED" ${TRAIN_EXTRA:-} $resume \
        >> "$RUN/train.log" 2>&1
    rc=$?
    say "train rc=$rc in $(( $(date +%s) - s )) s; epochs done: $(done_epochs) of $total"
    [ $rc -eq 124 ] && say "training stopped at the call's time limit; call again with the same settings to continue"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && tail -n 5 "$RUN/train.log" | sed 's/^/    /' | tee -a "$S"
fi

# The final evaluation, once training is complete; each result is kept, so a cut call loses none.
attack() {  # attack NAME JSON LIMIT ATTACKS [more eval flags]
    local name=$1 json=$2 limit=$3 attacks=$4; shift 4
    [ -f "$RUN/$json" ] && { say "$name: kept from an earlier call"; return; }
    [ "$(left 0)" -lt 30 ] && { say "$name: no time left in this call; call again"; return; }
    local s; s=$(date +%s)
    timeout "$(left 1)" "$CIFS_BIN" ${CIFS_FLAGS:-} eval --checkpoint "$RUN/last.safetensors" folder --data-dir "$DATA_DIR" \
        --no-download --limit "$limit" --attacks "$attacks" --json "$RUN/$json.part" "$@" > "$RUN/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 0 ] && mv "$RUN/$json.part" "$RUN/$json"
    say "$name rc=$rc in $(( $(date +%s) - s )) s"
    tail -n 6 "$RUN/$name.log" | sed 's/^/    /' | tee -a "$S"
}
if [ "$(done_epochs)" -ge "$total" ]; then
    attack eval eval.json "${EVAL_LIMIT:-10000}" natural,pgd20
    [ "${AA_LIMIT:-500}" -gt 0 ] && attack autoattack autoattack.json "${AA_LIMIT:-500}" autoattack ${AA_EXTRA:-}
fi

# What comes back: everything but the checkpoints, which only come back when small.
pack=$OUT/reproduce-w$WIDTH.tar.gz
small=()
for f in "$RUN"/last.safetensors; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -lt $((15 << 20)) ] && small+=("$(basename "$f")")
done
(cd "$RUN" && tar -czf "$pack" --exclude='*.safetensors' --exclude='*.part' . && \
    { [ ${#small[@]} -eq 0 ] || cp "${small[@]}" "$OUT/"; })
tail -n 3 "$RUN/metrics.jsonl" 2>/dev/null | tee -a "$S"
say "== packed $(du -h "$pack" | cut -f1) into $pack"
