#!/usr/bin/env bash
# Expression transfer at CPU scale, with identity taken out of the problem: stage 1 and
# stage 2 in a closed world of a few synthetic people (their identity seeds), with new
# expressions, cameras and motion everywhere; judged on a benchmark of the same people
# moving in held-out ways, against the control that decides whether Ψ transfers at all
# (Ψ driven by the source itself). Two stage-2 variants from the same Ψ3d, E_mot, clips,
# seed and budget: the paper's cross-view schedule and the monocular one (real driving
# input and real target always), the paper's central ablation in miniature.
# About 1 h on 2 CPU cores (stage 1 40 min, stage 2 25 min, judging 4 min).
#
#   bash scripts/closed_world_transfer.sh RUN_DIR [PERSON ...]   (default person: 901,
#                                                                 the bundled driving clip's)
#
# docs/evaluation.md ("Expression transfer against its control") reports the runs of one
# person (901; RUN_DIR runs/one_person) and of four (901-904; runs/four_people).
set -euo pipefail
RUN=${1:?usage: closed_world_transfer.sh RUN_DIR [PERSON ...]}
shift
PEOPLE=("${@:-901}")
E_MOT=src/portrait4d/assets/bundled/psi/motion_encoder   # the bundled model's learned E_mot (the judge too)
export OMP_NUM_THREADS=1
mkdir -p "$RUN"
SEEDS=$(IFS=,; echo "[${PEOPLE[*]}]")

# 1. Stage 1: Ψ3d of these people from 512 random expressions x 4 views (no adversarial
#    phase: on CPU it triples the step cost once it starts)
portrait4d train-3d --preset tiny --out "$RUN/stage1" --resume auto --set \
  trainer.steps=3000 trainer.checkpoint_every=250 loss.identity=0 data.bank_heads=512 \
  "data.generator.identity_seeds=$SEEDS" discrimination_kimg=1000

# 2. Monocular training clips (motion seeds 100-131, the people in turn) and the benchmark
#    (held-out motion seeds from 2^40, two clips per person at least)
for seed in $(seq 100 131); do
  person=${PEOPLE[$((seed % ${#PEOPLE[@]}))]}
  [ -f "$RUN/clips/clip_$seed/meta.json" ] || portrait4d synth --out "$RUN/clips/clip_$seed" \
    --frames 40 --views 0 --size 64 --seed "$seed" --identity-seed "$person" --overwrite > /dev/null
done
CLIPS=$(( ${#PEOPLE[@]} > 3 ? 2 * ${#PEOPLE[@]} : 6 ))
[ -f "$RUN/benchmark/benchmark.json" ] || portrait4d make-benchmark --out "$RUN/benchmark" \
  --identities "$CLIPS" --frames 6 --size 64 --identity-seeds "${PEOPLE[@]}"

# 3. Stage 2, two variants side by side (one core each); identity loss off (known people),
#    adversarial off in both (CPU budget)
train() {
  portrait4d train-4d --preset tiny --out "$RUN/$1" --resume auto --init "$RUN/stage1/psi3d" \
    --motion-encoder "$E_MOT" --clips "$RUN/clips" --set trainer.steps=1500 loss.identity=0 \
    loss.adversarial=0 "${@:2}" > "$RUN/$1.log" 2>&1
}
train paper &
train monocular cross_view.real_target=1 cross_view.real_driving=1 &
wait

# 4. Transfer against the v_d = v_s control, how much motion Ψ3d's pseudo views kept, and a
#    picture (benchmarks/results/closed_world_<RUN name>.json, RUN_DIR/transfer.png)
python benchmarks/stage2_transfer.py --benchmark "$RUN/benchmark" --checkpoint "$RUN/paper/psi" "$RUN/monocular/psi" \
  --judge "$E_MOT" --init "$RUN/stage1/psi3d" --name "closed_world_$(basename "$RUN")" --sheet "$RUN/transfer.png"
