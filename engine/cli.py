"""The `nl3dmm` command. Subcommands grow with the project; `render` is the demo."""
from __future__ import annotations

import argparse
import os
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


def _preprocess(args: argparse.Namespace) -> int:
    from .data.preprocess import PreprocessSettings, preprocess

    settings = PreprocessSettings(shard_size=args.shard_size, flip=args.flip, copies=args.copies,
                                  jitter=args.jitter, seed=args.seed, compress=args.compress)
    start = time.perf_counter()
    manifest = preprocess(args.src, args.out, settings, workers=args.workers, progress=not args.quiet)
    counts, seconds = manifest["counts"], time.perf_counter() - start
    print(f"{args.out}: {counts['samples']} samples in {counts['shards']} shards from {counts['sources']} sources "
          f"({counts['skipped_sources']} skipped, {counts['unpaired_images']} images without a label); "
          f"{seconds:.1f} s")
    for entry in manifest["skipped"][:20]:
        print(f"  skipped {entry['sample']}: {entry['error']}")
    if len(manifest["skipped"]) > 20:
        print(f"  ... and {len(manifest['skipped']) - 20} more (see {args.out}/manifest.json)")
    return 0


def _build_default_data(args: argparse.Namespace) -> int:
    from .data.default_data import DEFAULT_DATA_DIR, build_default_data

    out = Path(args.out) if args.out else DEFAULT_DATA_DIR
    if out.exists() and args.force:
        import shutil
        shutil.rmtree(out)
    manifest = build_default_data(Path(args.shared_data), out, progress=not args.quiet)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {manifest['counts']['samples']} samples from {manifest['counts']['sources']} photos, "
          f"{size / 2**20:.1f} MiB")
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
    pre = sub.add_parser("preprocess", help="turn a 300W-LP-style tree (NAME.jpg + NAME.mat) into a training store",
                         description="Crop every face to 224 x 224 around its landmarks (camera m corrected), "
                                     "unwrap a pseudo ground-truth UV texture, write memory-mappable shards. "
                                     "Re-running with the same arguments resumes; bad samples are reported "
                                     "and skipped.")
    pre.add_argument("src", help="dataset folder, searched recursively (e.g. 300W_LP/)")
    pre.add_argument("out", help="output store folder (created; must be empty or a store made with the same arguments)")
    pre.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="worker processes, each building whole shards (default: %(default)s = the CPU count)")
    pre.add_argument("--shard-size", type=int, default=500,
                     help="source samples per shard; a worker holds one shard in memory, about 0.33 MB per "
                          "stored sample (default: %(default)s)")
    pre.add_argument("--flip", action="store_true", help="also store the horizontal mirror of every crop")
    pre.add_argument("--copies", type=int, default=1, help="crops per source sample (default: %(default)s)")
    pre.add_argument("--jitter", type=float, default=0.0,
                     help="random crop offsets of up to this many output pixels (default: %(default)s = centred)")
    pre.add_argument("--seed", type=int, default=0, help="seed of the crop offsets (default: %(default)s)")
    pre.add_argument("--compress", action="store_true", help="compressed .npz shards (smaller; loaded into memory)")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    pre.set_defaults(run=_preprocess)
    default = sub.add_parser("build-default-data", help="regenerate the bundled default dataset from shared/data",
                             description="Rebuild nl3dmm/assets/default_data (17 real labelled photos, random crop "
                                         "offsets with m corrected, flips; fixed seed) from the shared data folder.")
    default.add_argument("--shared-data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
                         help="the project's shared/data folder (default: %(default)s)")
    default.add_argument("--out", help="output folder (default: the package's assets/default_data)")
    default.add_argument("--force", action="store_true", help="delete the output folder first")
    default.add_argument("--quiet", action="store_true", help="no progress bar")
    default.set_defaults(run=_build_default_data)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"nl3dmm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
