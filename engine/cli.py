"""The `nl3dmm` command. Subcommands grow with the project; `render` is the demo."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _render(args: argparse.Namespace) -> int:
    from .demo import DEFAULT_SAMPLE, render_demo
    from .render import available_backends

    sample = Path(args.sample) if args.sample else DEFAULT_SAMPLE
    start = time.perf_counter()
    out = render_demo(sample.with_suffix(""), Path(args.out), args.backend)
    print(f"wrote {out} ({time.perf_counter() - start:.2f} s; sample {sample.name}; "
          f"backends: {', '.join(k for k, v in available_backends().items() if v is None)})")
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from .train import train
    from .training.config import make_config, parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    config = make_config(args.config, **overrides)
    summary = train(config, resume=args.resume)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nl3dmm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render the mean face posed by a real AFLW2000-3D label to a PNG")
    render.add_argument("--sample", help="path of an AFLW2000-3D/300W-LP sample (.jpg with a .mat beside it); "
                                         "default: a bundled AFLW2000-3D image")
    render.add_argument("--out", default="out/mean_face.png", help="output PNG (default: %(default)s)")
    render.add_argument("--backend", choices=["cpu", "cuda", "triton", "reference"], default=None)
    render.set_defaults(run=_render)
    train = sub.add_parser("train", help="train the model (pretrain on L0, then end to end on L)",
                           description="Options are key=value overrides of engine/training/config.py "
                                       "TrainConfig, e.g. steps=500 batch_size=64 data=STORE out=runs/x.")
    train.add_argument("--config", default="quick", help="named configuration: cvpr18, cvpr18-finetune, "
                                                         "tpami19, quick (CPU, minutes), tiny (default: %(default)s)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out/")
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.set_defaults(run=_train)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"nl3dmm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
