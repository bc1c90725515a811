#!/usr/bin/env bash
# Paper-format runs of the subspace and gradient methods on the standard LM continual-learning benchmark, order 1
# (DBpedia -> Amazon -> Yahoo -> AG News, 1,000 training samples per label, scored by generation + exact match), with
# T5-large from a local path, each with its reference schedule. Written for one GPU; NOT run on the 2-core CPU
# machines the offline results come from (one method is several GPU hours).
#
#   DATA=~/data T5=~/models/t5-large bash experiments/paper/lm_standard_order1.sh [olora|osft|migu|migu-lora|all] [seed]
# (DEVICE=cpu to try it without a GPU; CLPET=... to use another clpet command.)
#
# DATA holds CL_Benchmark/ in the O-LoRA / MIGU layout (scenarios/lm-standard.yaml); T5 a Hugging Face T5-large folder.
# Runs go to experiments/runs/paper/lm-standard-order1/<method>/seed<k>; `clpet compare` tabulates them.
# Reference numbers (T5-large, order 1, average accuracy): O-LoRA 78.37 (O-LoRA's logs); OSFT and MIGU report
#   orders 1-3 averages only (docs/methods.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DATA:?set DATA to the folder holding CL_Benchmark/}"
: "${T5:?set T5 to a local T5-large folder}"
WHICH="${1:-all}"
SEED="${2:-0}"
COMMON=(scenario=lm-standard scenario.order=1 "data_root=$DATA" backbone.name=hf-seq2seq "backbone.model=$T5"
        "seed=$SEED" "device=${DEVICE:-cuda}" precision=fp32)

CLPET="${CLPET:-.venv/bin/clpet}"
run() {  # name, overrides...
  local name="$1"; shift
  $CLPET run "${COMMON[@]}" "$@" "out_dir=experiments/runs/paper/lm-standard-order1/$name/seed$SEED"
}

# O-LoRA (src/scripts/order_1.sh of cmnfriend/O-LoRA): r 8, alpha 32, dropout 0.1 on q/v, lambda_1 0.5, lambda_2 0,
# lr 1e-3, 1 epoch per task, batch 8 (the reference: 8 per device x gradient accumulation).
[[ $WHICH == all || $WHICH == olora ]] && run olora method=olora method.optim.epochs=1 method.optim.lr=1e-3 \
  method.optim.batch_size=8 method.optim.max_grad_norm=null
# OSFT (the authors' T5 scripts): full fine-tuning of the targets on task 1, then a frozen fraction of 1/T more per
# task; AdamW lr 1e-5 constant, 1 epoch per task, batch 8; attention q/k/v/o and FFN wi/wo.
[[ $WHICH == all || $WHICH == osft ]] && run osft method=osft "method.targets=[q,k,v,o,wi,wo]" \
  method.optim.epochs=1 method.optim.lr=1e-5 method.optim.batch_size=8 method.optim.max_grad_norm=null
# MIGU (scripts/full_tuning/order_1.sh of wenyudu/MIGU): T 0.7, lr 1e-4 constant, 1 epoch, batch 8, clipping 1.0.
[[ $WHICH == all || $WHICH == migu ]] && run migu method=migu method.threshold=0.7 method.optim.epochs=1 \
  method.optim.lr=1e-4 method.optim.batch_size=8
# MIGU, LoRA variant (r 8, alpha 32, dropout 0.1 on q/v), same schedule.
[[ $WHICH == all || $WHICH == migu-lora ]] && run migu-lora method=migu method.variant=lora method.optim.epochs=1 \
  method.optim.lr=1e-4 method.optim.batch_size=8
exit 0
