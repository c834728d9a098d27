#!/usr/bin/env bash
# A REDUCED version of the held-out experiment of docs/MODEL_CARD.md (issue 17, item 4), sized
# for a shared 2-core machine: the 3,448-vertex Surrey face model (a smaller decoder), pretraining
# (L0) only, batch 8, STEPS steps per arm, both arms trained at once. The full experiment is
# docs/results/holdout5/run.sh with data=<profiled store> (cvpr18, paper mesh, 500 + 500 steps).
# Both arms: same preset, steps and seed, the same 5 held-out AFLW2000-3D photos; arm "profiled"
# trains on the same 12 photos' 48 crops plus 4 profiled views of each crop (240 samples).
# Run from the repository root with ../shared/data beside it.
set -euo pipefail
AFLW=../shared/data/prnet/aflw2000
HELD=image02545,image02616,image03324,image03614,image04331
OUT=${OUT:-runs/profile-reduced}
RESULTS=docs/results/profile-reduced
STEPS=${STEPS:-150}
EVAL_STEP=${EVAL_STEP:-$STEPS}
TRAIN="--config quick face_model=surrey stage=pretrain steps=$STEPS batch_size=8 log_every=25 image_every=100000
       ckpt_every=25 keep_checkpoints=100 exclude=$HELD progress=false"
if [ "${SKIP_TRAINING:-0}" != 1 ]; then
    [ -f $OUT/profiled4/manifest.json ] || \
        nl3dmm profile engine/assets/default_data $OUT/profiled4 --views 4 --shard-size 6 --workers 2 --quiet
    /usr/bin/time -f "baseline: %e s" nl3dmm train $TRAIN out=$OUT/baseline > $OUT/baseline.log 2>&1 &
    /usr/bin/time -f "profiled: %e s" nl3dmm train $TRAIN out=$OUT/profiled data=$OUT/profiled4 > $OUT/profiled.log 2>&1 &
    wait
fi
for arm in baseline profiled; do
    ckpt=$OUT/$arm/checkpoints/checkpoint-$(printf %08d $EVAL_STEP).pt
    nl3dmm eval aflw2000 --data $AFLW --ckpt $ckpt --only $HELD --out $RESULTS/$arm-step$EVAL_STEP-HELD.json --quiet
    python docs/results/profile-reduced/m_error.py --data $AFLW --ckpt $ckpt --only $HELD --out $RESULTS/$arm-step$EVAL_STEP-m.json
done
