#!/usr/bin/env bash
# One lever of the search for a Ψ3d whose pseudo views keep the expression (docs/training.md,
# "Toward pseudo views that keep the expression"): stage 1 in segments, each segment's Ψ3d
# kept and measured on held-out people (benchmarks/retention_levers.py), with its CPU time.
#
#   bash scripts/retention_levers.sh RUN NAME PRESET "KEY=VALUE ..." STEPS...
#   e.g. bash scripts/retention_levers.sh ~/runs/levers small_expr small "stage1.expression_l1=10" 250 500 1000
#
# Resumable: a finished segment is skipped, an interrupted one resumes from its last checkpoint.
# Writes benchmarks/results/retention_levers_NAME.json (every segment measured so far).
set -euo pipefail
ROOT=$1; NAME=$2; PRESET=$3; OVERRIDES=$4; shift 4
RUN=$ROOT/$NAME
export OMP_NUM_THREADS=1
mkdir -p "$RUN"
for STEPS in "$@"; do
  if [ ! -d "$RUN/psi3d_$STEPS" ]; then
    # shellcheck disable=SC2086  # the overrides are separate words on purpose
    /usr/bin/time -f "%U %S" -o "$RUN/cpu_$STEPS.txt" portrait4d train-3d --preset "$PRESET" --out "$RUN/stage1" \
      --resume auto --set trainer.steps="$STEPS" trainer.checkpoint_every=250 trainer.progress=false loss.identity=0 $OVERRIDES
    cp -r "$RUN/stage1/psi3d" "$RUN/psi3d_$STEPS"
  fi
done
checkpoints=(); labels=(); cpu=(); total=0
for STEPS in "$@"; do
  [ -d "$RUN/psi3d_$STEPS" ] || continue
  total=$(python3 -c "print($total + sum(map(float, open('$RUN/cpu_$STEPS.txt').read().split())))")
  checkpoints+=("$RUN/psi3d_$STEPS"); labels+=("${NAME}_$STEPS"); cpu+=("$total")
done
python benchmarks/retention_levers.py --checkpoint "${checkpoints[@]}" --label "${labels[@]}" \
  --cpu-seconds "${cpu[@]}" --name "retention_levers_$NAME"
