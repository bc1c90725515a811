#!/usr/bin/env bash
# Paper-format CPE-CLIP runs (and the zero-shot CLIP baseline) on the FSCIL benchmarks it reports on: CIFAR-100
# (60 base classes + 8 x 5-way 5-shot) and CUB-200 (100 + 10 x 10-way 5-shot), CLIP ViT-B/16 from a local folder,
# the paper's seeds 42, 13, 50, 24, 69 (the reference train.py's note; its default list is 42..46). Each run takes its dataset's preset (presets/cpe-clip/<scenario>.yaml: batch and
# epochs per session, the reference's effective LR schedule, fp32). Written for one GPU; NOT run on the 2-core CPU
# machines the offline results come from.
#
#   DATA=~/data CLIP=~/models/clip-vit-base-patch16 bash experiments/paper/fscil_cpe_clip.sh [cpe-clip|clip-zeroshot|all] [cifar100-fscil|cub200-fscil|all]
# (DEVICE=cpu to try it without a GPU; CLPET=... to use another clpet command; SEEDS="42" for one seed.)
#
# DATA holds the datasets in the layouts of scenarios/cifar100-fscil.yaml and scenarios/cub200-fscil.yaml (the
# CEC index files for the sessions' shots); CLIP a Hugging Face CLIPModel folder (openai/clip-vit-base-patch16).
# Runs go to experiments/runs/paper/fscil-cpe-clip/<scenario>/<method>/seed<k>; `clpet compare` tabulates them.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DATA:?set DATA to the folder holding the datasets}"
: "${CLIP:?set CLIP to a local CLIP ViT-B/16 folder}"
METHODS="${1:-all}"
SCENARIOS="${2:-all}"
CLPET="${CLPET:-.venv/bin/clpet}"
[[ $METHODS == all ]] && METHODS="cpe-clip clip-zeroshot"
[[ $SCENARIOS == all ]] && SCENARIOS="cifar100-fscil cub200-fscil"
for scenario in $SCENARIOS; do
  for method in $METHODS; do
    for seed in ${SEEDS:-42 13 50 24 69}; do
      $CLPET run "scenario=$scenario" "method=$method" "data_root=$DATA" backbone.name=hf-clip "backbone.model=$CLIP" \
        "seed=$seed" "device=${DEVICE:-cuda}" precision=fp32 \
        "out_dir=experiments/runs/paper/fscil-cpe-clip/$scenario/$method/seed$seed"
    done
  done
done
