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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nl3dmm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render the mean face posed by a real AFLW2000-3D label to a PNG")
    render.add_argument("--sample", help="path of an AFLW2000-3D/300W-LP sample (.jpg with a .mat beside it); "
                                         "default: a bundled AFLW2000-3D image")
    render.add_argument("--out", default="out/mean_face.png", help="output PNG (default: %(default)s)")
    render.add_argument("--backend", choices=["cpu", "cuda", "triton", "reference"], default=None)
    render.set_defaults(run=_render)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"nl3dmm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
