"""``neopain`` command line: small tools around the workflow.

* ``neopain samples SHEET [--labels a b] [--data-root DIR]``: validate a sample sheet;
* ``neopain provenance FILE.parquet``: print a table's provenance record;
* ``neopain demo-data [DEST]``: fetch and verify the demo input.
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
    args = ap.parse_args(argv)

    if args.cmd == "samples":
        from .samples import SampleSheetError, load_samples

        try:
            df = load_samples(args.sheet, args.labels, args.data_root)
        except SampleSheetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.sheet}: {len(df)} videos, {df['subject_id'].nunique()} subjects, "
              f"labels {df['label'].value_counts().to_dict()}")
        return 0
    if args.cmd == "provenance":
        from .provenance import read_provenance

        try:
            rec = read_provenance(args.path)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(rec, indent=2, sort_keys=True))
        return 0
    if args.cmd == "demo-data":
        from .demo import main as demo_main

        return demo_main([args.dest])
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
