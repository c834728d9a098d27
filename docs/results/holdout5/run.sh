#!/usr/bin/env bash
# The held-out run of docs/MODEL_CARD.md, end to end on a CPU (2 cores: about 80 min of training).
# Run from the repository root with the project installed (README's first command) and the
# shared data folder beside the repository (../shared/data).
set -euo pipefail
AFLW=../shared/data/prnet/aflw2000
HELD=image02545,image02616,image03324,image03614,image04331        # the last five by file name
TRAIN=image00050,image00081,image00251,image00430,image00475,image00514,image00516,image01038,image01322,image02283,image02420
OUT=runs/holdout5
RESULTS=docs/results/holdout5

# (the recorded run saved every 100 steps; every 500 keeps just the two checkpoints used below)
nl3dmm train --config quick steps=500 batch_size=8 log_every=25 image_every=250 ckpt_every=500 \
    exclude=$HELD out=$OUT
PRETRAIN=$OUT/checkpoints/checkpoint-00000500.pt  # end of pretraining
FINAL=$OUT/checkpoints/checkpoint-00001000.pt     # pretrain 500 + end to end 500
for part in HELD TRAIN; do
    nl3dmm eval aflw2000 --data $AFLW --ckpt $PRETRAIN --only ${!part} --out $RESULTS/pretrain500-$part.json
    nl3dmm eval aflw2000 --data $AFLW --ckpt $FINAL --only ${!part} --out $RESULTS/final-$part.json
done
# The texture half of the representation experiment: the store's last 5 photos are the held-out ones.
nl3dmm represent --ckpt $PRETRAIN --targets 5 --k 40 --out runs/represent-pretrain500
nl3dmm represent --ckpt $FINAL --targets 5 --k 40 --out $RESULTS/represent-final
# The untrained rows: a checkpoint of the initial network (tests/conftest.py writes one the same way)
python -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; \
from conftest import write_untrained_checkpoint as w; w(Path('runs/untrained-paper.pt'), 'cvpr18', 'paper')"
for part in HELD TRAIN; do
    nl3dmm eval aflw2000 --data $AFLW --ckpt runs/untrained-paper.pt --only ${!part} \
        --out $RESULTS/untrained-paper-$part.json
done
nl3dmm reconstruct $AFLW/{image02545,image02616,image03324,image03614,image04331}.jpg --ckpt $FINAL \
    --out runs/holdout5-reconstructions
