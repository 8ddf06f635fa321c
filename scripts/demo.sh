#!/usr/bin/env bash
# The README's main command (via `make demo`): the whole product on embedded data, on the CPU, in minutes.
# Checkpoints: random-init tiny ViT and Swin (the 'random' baselines every leaderboard needs); every implemented
# task runs on generated mini data; the leaderboards land in demo_out/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${DEMO_OUT:-demo_out}
B=.venv/bin/benchmark
mkdir -p "$OUT"

$B init --arch vit_tiny_patch16_224 --set img_size=32 --set patch_size=4 --set depth=4 --set embed_dim=96 \
  --set num_heads=3 --seed 0 --out "$OUT/vit_tiny_random.pth"
$B init --arch swin_tiny_patch4_window7_224 --set img_size=32 --set window_size=4 --set "depths=[1,1,2,1]" \
  --set embed_dim=32 --set "num_heads=[1,2,4,8]" --seed 0 --out "$OUT/swin_tiny_random.pth"

for ckpt in "$OUT"/vit_tiny_random.pth "$OUT"/swin_tiny_random.pth; do
  $B run --ckpt "$ckpt" --suite demo --data mini --preset ci --work-dir "$OUT/work" --db "$OUT/results.db"
done

$B leaderboard --db "$OUT/results.db" --format csv --out "$OUT/leaderboard.csv"
$B leaderboard --db "$OUT/results.db" --format md --out "$OUT/leaderboard.md" --reference
echo
cat "$OUT/leaderboard.md"
