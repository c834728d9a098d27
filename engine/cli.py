"""The `nl3dmm` command. Subcommands grow with the project; `render` is the demo."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_INTERRUPTED = 128 + 2  # the shell's status for a process stopped by SIGINT


def _render(args: argparse.Namespace) -> int:
    from .tasks.demo import DEFAULT_SAMPLE, render_demo
    from .render import available_backends

    sample = Path(args.sample) if args.sample else DEFAULT_SAMPLE
    start = time.perf_counter()
    out = render_demo(sample.with_suffix(""), Path(args.out), args.backend)
    print(f"wrote {out} ({time.perf_counter() - start:.2f} s; sample {sample.name}; "
          f"backends: {', '.join(k for k, v in available_backends().items() if v is None)})")
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from .training.loop import train
    from .training.config import make_config, parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    config = make_config(args.config, **overrides)
    summary = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _convert_bfm(args: argparse.Namespace) -> int:
    from .face.bfm import convert_300wlp, convert_bfm2009

    start = time.perf_counter()
    if args.model_shape and (args.vertex_map or args.index_base is not None):
        raise ValueError("--vertex-map / --index-base apply to --bfm2009 only (Model_Shape.mat is already reduced)")
    if args.model_shape:
        basis = convert_300wlp(args.model_shape, args.model_exp, args.shape_components, args.exp_components)
    else:
        basis = convert_bfm2009(args.bfm2009, args.model_exp, args.vertex_map, args.index_base,
                                args.shape_components, args.exp_components)
    out = basis.save(args.out)
    expression = f"{basis.num_exp} expression" if basis.exp_basis is not None else "no expression (neutral shapes)"
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB; {basis.num_vertices} vertices, "
          f"{basis.num_shape} shape + {expression} components; {time.perf_counter() - start:.1f} s)")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from .data.preprocess import PreprocessSettings, preprocess

    basis = None
    if args.basis:
        from .face.bfm import load_basis
        from .face.facemodel import load_paper_mesh
        load_basis(args.basis, num_vertices=load_paper_mesh().num_vertices)  # fail here, not in every worker
        basis = str(Path(args.basis).resolve())
    settings = PreprocessSettings(shard_size=args.shard_size, flip=args.flip, copies=args.copies,
                                  jitter=args.jitter, seed=args.seed, compress=args.compress, basis=basis,
                                  landmarks=args.landmarks)
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


def _profile(args: argparse.Namespace) -> int:
    from .data.profile import ProfileSettings, profile

    settings = ProfileSettings(views=args.views, max_yaw=args.max_yaw, max_pitch=args.max_pitch,
                               max_roll=args.max_roll, scale_jitter=args.scale_jitter, shift_jitter=args.shift_jitter,
                               mirror=args.mirror, keep_source=not args.views_only, shard_size=args.shard_size,
                               seed=args.seed, compress=args.compress)
    start = time.perf_counter()
    manifest = profile(args.src, args.out, settings, workers=args.workers, progress=not args.quiet)
    counts = manifest["counts"]
    print(f"{args.out}: {counts['samples']} samples ({counts['views']} views) in {counts['shards']} shards from "
          f"{counts['sources']} source samples ({counts['skipped_sources']} skipped); "
          f"{time.perf_counter() - start:.1f} s")
    for entry in manifest["skipped"][:20]:
        print(f"  skipped {entry['sample']}: {entry['error']}")
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


def _eval_aflw2000(args: argparse.Namespace) -> int:
    import json

    from .tasks.aflw2000 import evaluate_checkpoint
    from .data.samples import split_names

    start = time.perf_counter()
    result = evaluate_checkpoint(args.data, args.ckpt, args.out, args.batch, args.device, args.limit,
                                 progress=not args.quiet, only=split_names(args.only) or None,
                                 yaw_split=args.yaw_split)
    print(result.table())
    used = int(result.landmark_mask.sum())
    print(f"{len(result.names)} faces, {used} of 68 landmarks used; {time.perf_counter() - start:.1f} s"
          + (f"; wrote {args.out}" if args.out else ""))
    if args.out is None and args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0


def _positive_int(text: str) -> int:
    """argparse type of a count (images, steps, components): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _device(text: str) -> str:
    """argparse type of --device: auto, cpu, cuda or cuda:N, and usable on this machine."""
    from .training.config import check_device
    try:
        return check_device(text, "--device")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_box(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"--box needs x0,y0,x1,y1, got {text!r}")
    try:
        return tuple(float(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box needs four numbers x0,y0,x1,y1, got {text!r}") from None


def _reconstruct(args: argparse.Namespace) -> int:
    from .runtime import resolve_device
    from .tasks.reconstruct import reconstruct

    start = time.perf_counter()
    report = reconstruct(args.inputs, args.ckpt, args.out, args.box, args.landmarks, args.batch,
                         resolve_device(args.device), progress=not args.quiet, detect=not args.no_detect,
                         max_faces=args.max_faces, sheet=args.sheet)
    for path, folder in report.written.items():
        print(f"{path} -> {folder}/ ({report.faces[path]} face(s); {'; '.join(report.notes[path])})")
    for path in report.no_face:
        print(f"{path}: no face found")
    for path, reason in report.failed.items():
        print(f"nl3dmm reconstruct: failed: {path}: {reason}", file=sys.stderr)
    if report.sheet is not None:
        print(f"contact sheet: {report.sheet}")
    elif args.sheet:
        print(f"no contact sheet written to {args.sheet}: no face was reconstructed")
    photos = len(report.written) + len(report.no_face) + len(report.failed)
    print(f"{photos} photo(s): {sum(report.faces.values())} face(s) reconstructed from {len(report.written)}, "
          f"{len(report.no_face)} with no face found, {len(report.failed)} failed; {time.perf_counter() - start:.1f} s")
    return 0 if report.ok else 1


def _represent(args: argparse.Namespace) -> int:
    from .face.bfm import load_basis
    from .data import default_store
    from .model.inference import load_trained
    from .tasks.representation import (run_experiment, run_shape_experiment, save_bar_plot, save_shape_bar_plot,
                                 write_report)

    start = time.perf_counter()
    if args.part in ("shape", "both") and not args.basis:
        raise ValueError("the shape half needs dense ground-truth shapes: convert your BFM files with "
                         "`nl3dmm convert-bfm ... --out basis.npz` and pass --basis basis.npz")
    model, face_model, config = load_trained(args.ckpt)
    data = args.data or default_store()
    out = Path(args.out)
    texture = shape = None
    if args.part in ("texture", "both"):
        texture = run_experiment(model.texture_decoder, data, model.config.code_size, args.k, args.targets,
                                 args.steps, args.lr)
        save_bar_plot(texture, out / "representation.png")
        print(texture.table())
        print(f"texture targets: {texture.target_samples} samples of {', '.join(texture.target_photos)}; PCA of "
              f"{texture.pca_samples} samples of the other photos; {texture.scale}")
    if args.part in ("shape", "both"):
        basis = load_basis(args.basis, num_vertices=face_model.num_vertices)
        shape = run_shape_experiment(model.shape_decoder, data, basis, model.config.code_size, face_model.landmarks,
                                     face_model.units_per_mm, args.k, args.targets, args.steps, args.lr,
                                     args.pca_shapes)
        save_shape_bar_plot(shape, out / "representation_shape.png")
        print(shape.table())
        print(f"shape targets: {shape.target_shapes} photos ({', '.join(shape.target_photos)}); PCA of "
              f"{shape.pca_shapes} other photos' shapes; {shape.scale}")
    write_report(out / "representation.json", texture, shape,
                 {"checkpoint": str(args.ckpt), "data": str(data), "basis": args.basis,
                  "trained_on": config.get("data") or "bundled default data",
                  "held_out_in_training": config.get("exclude")})
    print(f"{time.perf_counter() - start:.1f} s; wrote {out}/representation.json and the plot(s)")
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
    train.set_defaults(run=_train, command="train")
    convert = sub.add_parser(
        "convert-bfm", help="turn the BFM-derived bases you downloaded into the compact basis.npz that dense "
                            "ground-truth shapes need (Shape_Para/Exp_Para of 300W-LP)")
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-shape", help="300W-LP Code/ModelGeneration/Model_Shape.mat (53,215 vertices)")
    source.add_argument("--bfm2009", help="BFM 2009 01_MorphableModel.mat (53,490 vertices; reduced to 53,215)")
    convert.add_argument("--model-exp", help="300W-LP Model_Exp.mat or 3DDFA Model_Expression.mat (expression "
                                             "basis for Exp_Para); without it, with --bfm2009, shapes are neutral")
    convert.add_argument("--vertex-map", help="with --bfm2009: .mat with map_tddfa_to_basel (0-based) or trimIndex "
                                              "(1-based); default: the bundled map_tddfa_to_basel.mat")
    convert.add_argument("--index-base", type=int, choices=[0, 1], help="override the vertex map's index base")
    convert.add_argument("--shape-components", type=_positive_int, help="keep the first K identity components (default: all)")
    convert.add_argument("--exp-components", type=_positive_int, help="keep the first K expression components (default: all)")
    convert.add_argument("--out", required=True, help="output .npz")
    convert.set_defaults(run=_convert_bfm)
    pre = sub.add_parser("preprocess", help="turn a 300W-LP-style tree (NAME.jpg + NAME.mat) into a training store",
                         description="Crop every face to 224 x 224 around its landmarks (camera m corrected), "
                                     "unwrap a pseudo ground-truth UV texture, write memory-mappable shards. "
                                     "Re-running with the same arguments resumes; bad samples are reported "
                                     "and skipped.")
    pre.add_argument("src", help="dataset folder, searched recursively (e.g. 300W_LP/)")
    pre.add_argument("out", help="output store folder (created; must be empty or a store made with the same arguments)")
    pre.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                     help="worker processes, each building whole shards (default: %(default)s = the CPU count)")
    pre.add_argument("--shard-size", type=_positive_int, default=500,
                     help="source samples per shard; a worker holds one shard in memory, about 0.33 MB per "
                          "stored sample (default: %(default)s)")
    pre.add_argument("--flip", action="store_true", help="also store the horizontal mirror of every crop")
    pre.add_argument("--copies", type=_positive_int, default=1, help="crops per source sample (default: %(default)s)")
    pre.add_argument("--jitter", type=float, default=0.0,
                     help="random crop offsets of up to this many output pixels (default: %(default)s = centred)")
    pre.add_argument("--seed", type=int, default=0, help="seed of the crop offsets (default: %(default)s)")
    pre.add_argument("--compress", action="store_true", help="compressed .npz shards (smaller; loaded into memory)")
    pre.add_argument("--basis", help="converted BFM basis (nl3dmm convert-bfm): unwrap the pseudo textures with "
                                     "each label's dense shape instead of the mean shape")
    pre.add_argument("--landmarks", default="auto", choices=("auto", "pts_3d", "dense", "mean", "pt2d"),
                     help="landmark targets (nl3dmm.data.landmark_targets): auto = per sample the first of "
                          "landmarks/<subset>/<name>_pts.mat pts_3d, pt3d_68, dense shape (--basis), mean shape; "
                          "pt2d (the visible-outline jaw) only by name (default: %(default)s)")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    pre.set_defaults(run=_preprocess)
    prof = sub.add_parser(
        "profile", help="synthesize large-pose views of a training store's faces (3DDFA-style face profiling)",
        description="For every sample of SRC_STORE: turn the face in 3-D (|yaw| up to --max-yaw on the side it "
                    "faces, pitch/roll jitter, crop scale/shift jitter), render it with its own pseudo texture "
                    "through nl3dmm's renderer over its crop warped to follow the head, and store the view with "
                    "exact labels (m, Pose_Para, 68 landmarks and their visibility). Texels the photo never showed "
                    "are left out of texture_mask (or, with --mirror, mirrored from the other side). Same store "
                    "format as preprocess; re-running resumes.")
    prof.add_argument("src", help="training store to profile (e.g. made by nl3dmm preprocess)")
    prof.add_argument("out", help="output store folder (created; must be empty or a store made with the same "
                                  "arguments)")
    prof.add_argument("--views", type=int, default=10, help="new views per source sample (default: %(default)s)")
    prof.add_argument("--max-yaw", type=float, default=90.0,
                      help="largest |yaw| of a view, degrees (default: %(default)s)")
    prof.add_argument("--max-pitch", type=float, default=10.0,
                      help="pitch changes of up to this many degrees (default: %(default)s)")
    prof.add_argument("--max-roll", type=float, default=10.0,
                      help="roll changes of up to this many degrees (default: %(default)s)")
    prof.add_argument("--scale-jitter", type=float, default=0.1,
                      help="crop side x U(1 - a, 1 + a) (default: %(default)s)")
    prof.add_argument("--shift-jitter", type=float, default=8.0,
                      help="crop centre offsets of up to this many output pixels (default: %(default)s)")
    prof.add_argument("--mirror", action="store_true",
                      help="count texels mirrored from the symmetric side as known texture targets "
                           "(default: never-seen texels are masked out of texture_mask)")
    prof.add_argument("--views-only", action="store_true", help="do not copy the source samples into the output")
    prof.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="worker processes, each building whole shards (default: %(default)s = the CPU count)")
    prof.add_argument("--shard-size", type=int, default=50, help="source samples per shard (default: %(default)s)")
    prof.add_argument("--seed", type=int, default=0, help="seed of the sampled poses (default: %(default)s)")
    prof.add_argument("--compress", action="store_true", help="compressed .npz shards (smaller; loaded into memory)")
    prof.add_argument("--quiet", action="store_true", help="no progress bar")
    prof.set_defaults(run=_profile)
    default = sub.add_parser("build-default-data", help="regenerate the bundled default dataset from shared/data",
                             description="Rebuild nl3dmm/assets/default_data (17 real labelled photos, random crop "
                                         "offsets with m corrected, flips; fixed seed) from the shared data folder.")
    default.add_argument("--shared-data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
                         help="the project's shared/data folder (default: %(default)s)")
    default.add_argument("--out", help="output folder (default: the package's assets/default_data)")
    default.add_argument("--force", action="store_true", help="delete the output folder first")
    default.add_argument("--quiet", action="store_true", help="no progress bar")
    default.set_defaults(run=_build_default_data)
    evaluation = sub.add_parser("eval", help="evaluate a trained checkpoint on a benchmark")
    bench = evaluation.add_subparsers(dest="benchmark", required=True)
    aflw = bench.add_parser("aflw2000", help="68-landmark 2-D NME per yaw bin on AFLW2000-3D",
                            description="For every imageXXXXX.jpg + .mat in --data: crop 224 x 224 from the "
                                        "ground-truth landmark box (as 3DDFA/PRNet evaluations do), predict, map the "
                                        "68 projected landmark vertices back to the photo and score them with NME "
                                        "(normalised by sqrt(w*h) of the GT box) per |yaw| bin.")
    aflw.add_argument("--data", required=True, help="folder of AFLW2000-3D images and .mat labels")
    aflw.add_argument("--ckpt", required=True, help="checkpoint written by nl3dmm train")
    aflw.add_argument("--out", help="JSON file for the summary and per-face NME")
    aflw.add_argument("--json", action="store_true", help="print the JSON summary when --out is not given")
    aflw.add_argument("--batch", type=_positive_int, default=16, help="images per forward pass (default: %(default)s)")
    aflw.add_argument("--limit", type=_positive_int, help="only the first N images (sorted by name)")
    aflw.add_argument("--only", help="comma-separated image names (e.g. image02545,image04331): evaluate just "
                                     "these, e.g. the photos a run held out with exclude=")
    aflw.add_argument("--device", type=_device, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    aflw.add_argument("--yaw-split", default="paper", choices=("paper", "pose_para"),
                      help="yaw bins: paper = 3DDFA's AFLW2000-3D-new.pose.npy (the paper's 1306/462/232 split), "
                           "pose_para = each label's Pose_Para yaw (default: %(default)s)")
    aflw.add_argument("--quiet", action="store_true", help="no progress bar")
    aflw.set_defaults(run=_eval_aflw2000)
    recon = sub.add_parser(
        "reconstruct", help="photos -> textured OBJ, overlay, 68 landmarks and parameters of every face",
        description="Find the faces of each photo (from --box, --landmarks, a NAME.pts/NAME.mat beside the image, "
                    "else the face detector: dlib HOG + OpenCV's profile cascade), run the model on each face's crop "
                    "and write OUT/<stem>/: per face <stem>.faceK.obj + .mtl + _texture.png, .landmarks.json/.npy "
                    "(photo pixels, corner frame), .params.npz; per photo overlay.png (all faces, photo size) and "
                    "faces.json (each face's box, score, crop). A photo with no face found is reported and counted, "
                    "not a failure. Grayscale images are converted to RGB. Failures are reported per file; the exit "
                    "status is 1 if any file failed.")
    recon.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    recon.add_argument("--ckpt", required=True, help="checkpoint written by nl3dmm train")
    recon.add_argument("--out", required=True, help="output folder (one sub-folder per image)")
    where = recon.add_mutually_exclusive_group()
    where.add_argument("--box", type=_parse_box, help="face box x0,y0,x1,y1 in pixels (tight: brow to chin), "
                                                      "for every input")
    where.add_argument("--landmarks", help="landmark file of the single input image: .pts (iBUG, 1-based) or .mat")
    where.add_argument("--no-detect", action="store_true",
                       help="no face detection: without a box or landmarks, crop the largest centred square "
                            "(for photos that are already face crops)")
    recon.add_argument("--max-faces", type=_positive_int, default=None, metavar="N",
                       help="reconstruct at most the N largest detected faces per photo (default: all)")
    recon.add_argument("--sheet", metavar="PNG", help="also write a contact sheet there: one row per face, "
                                                      "photo crop | overlay | shape | texture")
    recon.add_argument("--batch", type=_positive_int, default=8, help="images per forward pass (default: %(default)s)")
    recon.add_argument("--device", type=_device, default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    recon.add_argument("--quiet", action="store_true", help="no progress bar")
    recon.set_defaults(run=_reconstruct)
    rep = sub.add_parser(
        "represent", help="representation power: fit the linear (PCA) and nonlinear models' codes to the same "
                          "held-out textures (and shapes, with --basis), compare the errors",
        description="Texture: targets are the pseudo UV textures of the last --targets source photos of the store; "
                    "the linear model is the PCA (k components) of the other photos' textures; both codes are "
                    "fitted with Adam on the masked L1 (decoder frozen). Shape (--part shape/both, needs --basis): "
                    "targets are those photos' dense shapes from their Shape_Para/Exp_Para; PCA of the other "
                    "photos' shapes; both fitted on the paper's std-normalised L2 shape loss; reported in mm. "
                    "Writes OUT/representation.json and bar plots.")
    rep.add_argument("--ckpt", required=True, help="checkpoint written by nl3dmm train")
    rep.add_argument("--data", help="training store (default: the bundled default data)")
    rep.add_argument("--part", choices=["texture", "shape", "both"], default="texture",
                     help="which half of the experiment (default: %(default)s)")
    rep.add_argument("--basis", help="converted BFM basis (nl3dmm convert-bfm) for the shape targets")
    rep.add_argument("--pca-shapes", type=_positive_int, default=1000,
                     help="at most this many other photos' shapes in the shape PCA (default: %(default)s)")
    rep.add_argument("--k", type=_positive_int, default=40, help="PCA components (default: %(default)s)")
    rep.add_argument("--targets", type=_positive_int, default=3, help="held-out source photos (default: %(default)s)")
    rep.add_argument("--steps", type=_positive_int, default=300, help="Adam steps per fit (default: %(default)s)")
    rep.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default: %(default)s)")
    rep.add_argument("--out", default="out/representation", help="output folder (default: %(default)s)")
    rep.set_defaults(run=_represent)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        # key=value overrides may stand anywhere among the options (`train out=x --config tiny
        # steps=1`); argparse mixes positionals and options only without subparsers in the way.
        args = train.parse_intermixed_args(argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"nl3dmm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: one line (train says where to resume), no traceback
        print(f"nl3dmm {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
