#!/usr/bin/env bash
# The held-out run of docs/MODEL_CARD.md again with the faithful `cvpr18` preset (issue 14):
# same 5 held-out AFLW2000-3D photos, same steps (500 pretrain + 500 end to end), batch 8 in both
# stages, seed 0; only the recipe differs (constant lr, no grad clip, per-iteration crop shifts of
# up to 32 px, alternating landmark steps, face-mask compositing, patchGAN weight 1, ...).
# ARMS="baseline profiled" adds issue 17's arm: the same run on the 12 training photos profiled
# into 4 extra views each (nl3dmm profile, 13 s). Each arm took about 42 min on 2 cores (pretraining
# ~9.5 images/s, end to end ~1.9 images/s); the logs are *-train.log beside this script.
# Run from the repository root with the project installed and ../shared/data beside it.
set -euo pipefail
AFLW=../shared/data/prnet/aflw2000
HELD=image02545,image02616,image03324,image03614,image04331        # the last five by file name
TRAIN=image00050,image00081,image00251,image00430,image00475,image00514,image00516,image01038,image01322,image02283,image02420
OUT=${OUT:-runs/holdout5-faithful}
RESULTS=docs/results/holdout5-faithful
ARMS=${ARMS:-baseline}
ARGS="--config cvpr18 steps=500 batch_size=8 finetune_batch_size=8 log_every=25 image_every=250
      ckpt_every=500 exclude=$HELD progress=false"
mkdir -p $OUT
for arm in $ARMS; do
    data=""
    if [ $arm = profiled ]; then
        [ -f $OUT/profiled4/manifest.json ] || \
            nl3dmm profile engine/assets/default_data $OUT/profiled4 --views 4 --workers 2 --quiet
        data="data=$OUT/profiled4"
    fi
    [ "${SKIP_TRAINING:-0}" = 1 ] || \
        /usr/bin/time -f "$arm: %e s" nl3dmm train $ARGS out=$OUT/$arm $data > $OUT/$arm.log 2>&1
    for step in 500 1000; do
        ckpt=$OUT/$arm/checkpoints/checkpoint-$(printf %08d $step).pt
        for part in HELD TRAIN; do
            nl3dmm eval aflw2000 --data $AFLW --ckpt $ckpt --only ${!part} --quiet \
                --out $RESULTS/$arm-step$step-$part.json
            python docs/results/profile-reduced/m_error.py --data $AFLW --ckpt $ckpt --only ${!part} \
                --out $RESULTS/$arm-step$step-$part-m.json
        done
    done
done
python docs/results/holdout5-faithful/compare.py > $RESULTS/compare.md
