"""Old (docs/results/holdout5, the pre-issue-14 recipe, scored by Pose_Para yaw) vs new (this
folder, the faithful cvpr18 preset) held-out numbers, every face re-binned by the paper's yaw
split (3DDFA's AFLW2000-3D-new.pose.npy) so the two columns are comparable; then issue 17's
comparison: the faithful baseline vs the same run on the profiled store, NME by the paper's yaw
bins and camera error side by side. Prints markdown.
Run from the repository root: python docs/results/holdout5-faithful/compare.py"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nl3dmm.data.samples import read_sample
from nl3dmm.tasks.yaw_split import absolute_yaw

AFLW = Path("../shared/data/prnet/aflw2000")
OLD, NEW = Path("docs/results/holdout5"), Path("docs/results/holdout5-faithful")
BINS = [(0, 30), (30, 60), (60, 90)]
ROWS = [("untrained network (the same network at init either way)", OLD / "untrained-paper-{part}.json",
         OLD / "untrained-paper-{part}.json"),
        ("after pretraining (500 steps)", OLD / "pretrain500-{part}.json", NEW / "baseline-step500-{part}.json"),
        ("after pretraining + end to end (500 + 500)", OLD / "final-{part}.json",
         NEW / "baseline-step1000-{part}.json")]


def paper_bins(result_file: Path) -> tuple[list[float | None], list[int]]:
    faces = json.loads(result_file.read_text())["per_face"]
    per_bin: list[list[float]] = [[] for _ in BINS]
    for face in faces:
        yaw = absolute_yaw(read_sample(AFLW / face["image"]), "paper")
        index = next(i for i, (lo, hi) in enumerate(BINS) if (lo < yaw or lo == 0) and yaw <= hi)
        per_bin[index].append(face["nme"])
    return [float(np.mean(v)) * 100 if v else None for v in per_bin], [len(v) for v in per_bin]


def cells(result_file: Path | None, used: list[int]) -> list[str]:
    if result_file is None or not result_file.exists():
        return ["–"] * (sum(1 for n in used if n) + 1)
    nme, _ = paper_bins(result_file)
    shown = [v for v, n in zip(nme, used) if n]
    return [f"{v:.2f}" for v in shown] + [f"{np.mean(shown):.2f}"]


for part, title in (("HELD", "held-out photos"), ("TRAIN", "training photos")):
    _, used = paper_bins(ROWS[0][1].with_name(ROWS[0][1].name.format(part=part)))
    bins = [f"{'[' if lo == 0 else '('}{lo}, {hi}] ({n})" for (lo, hi), n in zip(BINS, used) if n]
    print(f"\n{title}, NME % by the paper's yaw bins (old | new)\n")
    print("| model | " + " | ".join(f"{b} old | new" for b in bins) + " | mean of bins old | new |")
    print("|---|" + "---|---|" * (len(bins) + 1))
    for label, old, new in ROWS:
        o = cells(old.with_name(old.name.format(part=part)), used)
        n = cells(None if new is None else new.with_name(new.name.format(part=part)), used)
        print(f"| {label} | " + " | ".join(f"{a} | {b}" for a, b in zip(o, n)) + " |")


# ---- issue 17: the faithful baseline vs the same run on the profiled store -------------------
ARMS = [("baseline (48 crops)", "baseline"), ("profiled (48 crops + 4 views each = 240)", "profiled")]
for part, title in (("HELD", "held-out photos"), ("TRAIN", "training photos")):
    _, used = paper_bins(ROWS[0][1].with_name(ROWS[0][1].name.format(part=part)))
    bins = [f"{'[' if lo == 0 else '('}{lo}, {hi}] ({n})" for (lo, hi), n in zip(BINS, used) if n]
    print(f"\n{title}: profiled views (issue 17), NME % by the paper's yaw bins and camera error\n")
    print("| arm | step | " + " | ".join(bins) + " | mean of bins | m RMS (normalised) | yaw error (deg) |")
    print("|---|---|" + "---|" * (len(bins) + 3))
    for step in (500, 1000):
        for label, arm in ARMS:
            nme = cells(NEW / f"{arm}-step{step}-{part}.json", used)
            m_file = NEW / f"{arm}-step{step}-{part}-m.json"
            if m_file.exists():
                m = json.loads(m_file.read_text())
                camera = [f"{m['m_rms_normalised']:.2f}", f"{m['yaw_error_deg']:.1f}"]
            else:
                camera = ["–", "–"]
            print(f"| {label} | {step} | " + " | ".join(nme + camera) + " |")
