#!/usr/bin/env bash
# Reproduces the bundled demo model (src/portrait4d/assets/bundled/) from a clean checkout
# with the project's own commands: learned encoders -> stage 1 (Ψ3d) -> synthetic training
# clips -> stage 2 (Ψ) -> bundle. Everything is synthetic and seeded; about 1.5 h on 2 CPU
# cores (one training thread each: the tiny networks are bound by per-operation overhead).
#
#   bash scripts/train_bundled_model.sh [RUN_DIR]      (default runs/bundled)
#
# Then `portrait4d demo --out out/demo` uses the new model.
set -euo pipefail
RUN=${1:-runs/bundled}
PACKAGE=src/portrait4d/assets/bundled
export OMP_NUM_THREADS=1
mkdir -p "$RUN"

# 1. E_mot and the identity network of the synthetic world (held-out report in encoders/report.json)
portrait4d train-encoders --out "$RUN/encoders" --seed 0 --overwrite

# 2. Stage 1: Ψ3d from synthetic multi-view pairs (identity loss off: it triples the step cost on CPU)
portrait4d train-3d --preset tiny --out "$RUN/stage1" --resume auto --set \
  trainer.steps=1000 trainer.checkpoint_every=250 loss.identity=0 data.bank_heads=256

# 3. Monocular training clips (seeds 100-131; the evaluation benchmark uses seeds >= 2^40)
for seed in $(seq 100 131); do
  [ -f "$RUN/clips/clip_$seed/meta.json" ] || \
    portrait4d synth --out "$RUN/clips/clip_$seed" --frames 40 --views 0 --size 64 --seed "$seed"
done

# 4. Stage 2: Ψ by cross-view self-reenactment (paper schedule), learned E_mot and identity
portrait4d train-4d --preset tiny --out "$RUN/stage2" --resume auto \
  --init "$RUN/stage1/psi3d" --motion-encoder "$RUN/encoders/motion_encoder" --clips "$RUN/clips" \
  --set trainer.steps=800 loss.identity_network=learned loss.identity_encoder="$RUN/encoders/identity_encoder"

# 5. Bundle: the model, a source portrait (seed 900) and a driving clip (seed 901), all unseen in training
portrait4d synth --out "$RUN/sample_source" --frames 1 --views 0 --size 64 --seed 900 --overwrite
portrait4d synth --out "$RUN/sample_driving" --frames 75 --views 0 --size 64 --seed 901 --overwrite
rm -rf "$PACKAGE" && mkdir -p "$PACKAGE"
cp -r "$RUN/stage2/psi" "$PACKAGE/psi"
cp "$RUN/sample_source/frames/000000.png" "$PACKAGE/source.png"
cp -r "$RUN/sample_driving" "$PACKAGE/driving"
rm -f "$PACKAGE/driving/contact_sheet.png"
du -sh "$PACKAGE"
