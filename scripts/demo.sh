#!/usr/bin/env bash
# The README's main command (via `make demo`): the whole product on embedded data, on the CPU, in minutes.
#   1. SimMIM pre-training of a tiny ViT on the real Fashion-MNIST (loss curve + reconstruction figure).
#   2. Random-init baselines: the same ViT, and a tiny Swin.
#   3. The implemented tasks on generated mini data (preset ci) for each checkpoint: the Fashion-MNIST probe, the
#      semantic tasks CoG L1-L5, iNat18 and five of the K12 datasets (CIFAR-10, VOC2007, DTD, Pets, Caltech-101:
#      one per reader family and metric; all 12 would add ~3 minutes: 21 runs at ~8 s, so DEMO_TASKS=...,k12 runs them), and the
#      geometric tasks COCO pose, CrowdPose, NYUv2 depth, KITTI depth, GOT-10k and LaSOT tracking, and the combined
#      tasks COCO Mask R-CNN, ADE20K UperNet and ADE20K Mask2Former.
#   4. CSV and Markdown leaderboards (with the paper's reported rows) in demo_out/, and the leaderboard site
#      (demo_out/site/index.html: tables, charts, the analysis figures).
#   5. The Dark Secrets analyses (attention distance, entropy, head diversity, CKA, AvgDist) of the SimMIM ViT
#      against the same ViT at random init, on 128 held-out Fashion-MNIST images: demo_out/analysis/report.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${DEMO_OUT:-demo_out}
ITERS=${DEMO_PRETRAIN_ITERS:-1000}
B=.venv/bin/benchmark
# Tiny models on 2 cores: one thread per process is faster than torch's default (measured: 10m38s vs 20m21s for the
# same demo), and the data-loading / evaluation side processes do not fight over the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"

# The architecture of pretrain/configs/simmim_vit_tiny_fmnist.py, so the random baseline differs only in training.
VIT=(--arch vit_tiny_patch16_224 --set img_size=32 --set patch_size=4 --set depth=4 --set embed_dim=64
     --set num_heads=2)
$B pretrain --config simmim_vit_tiny_fmnist --work-dir "$OUT/pretrain_vit_tiny" --out "$OUT/vit_tiny_simmim.pth" \
  --cfg-options simmim.iters="$ITERS" simmim.checkpoint_interval=500
$B init "${VIT[@]}" --seed 0 --out "$OUT/vit_tiny_random.pth"
$B init --arch swin_tiny_patch4_window7_224 --set img_size=32 --set window_size=4 --set "depths=[1,1,2,1]" \
  --set embed_dim=32 --set "num_heads=[1,2,4,8]" --seed 0 --out "$OUT/swin_tiny_random.pth"

SEMANTIC=cog,k12_cifar10,k12_voc2007,k12_dtd,k12_pets,k12_caltech101,inat18
GEOMETRIC=coco_pose,crowdpose,nyu_depth,kitti_depth,got10k,lasot
COMBINED=coco_det,ade20k_seg,ade20k_m2f
TASKS=${DEMO_TASKS:-fashion_mnist_probe,$SEMANTIC,$GEOMETRIC,$COMBINED}
for ckpt in vit_tiny_simmim vit_tiny_random swin_tiny_random; do
  $B run --ckpt "$OUT/$ckpt.pth" --tasks "$TASKS" --data mini --preset ci --work-dir "$OUT/work" --db "$OUT/results.db"
done

$B leaderboard --db "$OUT/results.db" --format csv --out "$OUT/leaderboard.csv"
$B leaderboard --db "$OUT/results.db" --format md --out "$OUT/leaderboard.md" --reference
$B analyze --ckpt "$OUT/vit_tiny_simmim.pth" --name simmim --ckpt "$OUT/vit_tiny_random.pth" --name random \
  --data mini --num-images 128 --out "$OUT/analysis"
$B leaderboard --db "$OUT/results.db" --format html --out "$OUT/site" --reference --analysis "$OUT/analysis"
echo
echo "leaderboard site: $OUT/site/index.html (open it in a browser; works offline)"
echo "analysis report: $OUT/analysis/report.md"
echo "pre-training figures: $OUT/pretrain_vit_tiny/loss_curve.png, $OUT/pretrain_vit_tiny/reconstruction.png"
grep -v "(reported)" "$OUT/leaderboard.md"
