#!/usr/bin/env bash
# A REDUCED version of the held-out experiment of docs/MODEL_CARD.md (issue 17, item 4), sized
# for a shared 2-core machine: pretraining only, 200 steps of batch 8 per arm (the full run is
# docs/results/holdout5/run.sh: 500 + 500 steps, ~80 min). Both arms: same preset, steps, seed and
# the same 5 held-out AFLW2000-3D photos; arm "profiled" trains on the same 12 photos' crops plus
# 4 profiled views of each crop. Run from the repository root with ../shared/data beside it.
set -euo pipefail
AFLW=../shared/data/prnet/aflw2000
HELD=image02545,image02616,image03324,image03614,image04331
OUT=${OUT:-runs/profile-reduced}
RESULTS=docs/results/profile-reduced
STEPS=${STEPS:-200}
nl3dmm profile engine/assets/default_data $OUT/profiled4 --views 4 --shard-size 6 --workers 2 --quiet
for arm in baseline profiled; do
    data=$([ $arm = profiled ] && echo "data=$OUT/profiled4" || echo "")
    /usr/bin/time -f "$arm: %e s" nl3dmm train --config quick stage=pretrain steps=$STEPS batch_size=8 log_every=25 \
        image_every=1000 ckpt_every=$STEPS exclude=$HELD out=$OUT/$arm progress=false $data
    ckpt=$OUT/$arm/checkpoints/checkpoint-$(printf %08d $STEPS).pt
    nl3dmm eval aflw2000 --data $AFLW --ckpt $ckpt --only $HELD --out $RESULTS/$arm-HELD.json --quiet
    python docs/results/profile-reduced/m_error.py --data $AFLW --ckpt $ckpt --only $HELD --out $RESULTS/$arm-m.json
done
