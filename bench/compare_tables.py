"""Do two versions of the code give the same result tables on the CI configuration?

    .venv/bin/python bench/compare_tables.py --base 31ee83a            # vs this checkout
    .venv/bin/python bench/compare_tables.py --base main --head ../wt  # two trees
    .venv/bin/python bench/compare_tables.py --base main --set track.detector=mtcnn

Each side runs the tiny CI configuration (``tests/_tiny.py`` of that side: four CK+
sequences of two subjects, every rule of the DAG) with its own Snakefile and sources,
from an empty ``results/``, then every Parquet table under ``results/`` that both sides
wrote is compared cell by cell: numbers exactly (NaN equals NaN), text with each side's
work directory replaced by ``<work>``. Columns only the head has are listed as *added*
(a restructuring may add label columns: issue 19 added ``backbone``/``layer`` to the
score tables); a table, column or value that differs, or a table only one side wrote,
makes the exit status 1.

Tables 5/6/7 before issue 19 packed selector and k into one string; now they keep them
apart. A base table whose ``selector`` holds ``name(k)`` strings (e.g. ``relieff(15)``)
and that has no ``k`` column compares equal to a head with ``selector`` = ``relieff``
and ``k`` = 15: the head's two columns are joined as ``name(k)`` and compared with the
base's one (the ``k`` column then does not count as added). Such tables are printed
with ``(selector+k joined as name(k))``. This parsing of the old format lives here
only, never in ``src/`` or ``scripts/``. ``--set key=value`` (dotted key,
YAML value) overrides both sides' configuration, e.g. to hold the tracker fixed while
comparing a change elsewhere. A ``--base``/``--head`` that is not a directory is a git
revision of this repository, checked out into a temporary worktree.

Each side's rule scripts import that side's ``src/`` (``PYTHONPATH`` is set per side:
an installed or inherited ``neopain`` would otherwise run the same code on both sides),
and both read the face-mesh weights of this checkout's ``resources/weights`` (``make
mesh-weights``; a git worktree of a revision has none), linked into each work directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _tree(spec: str, tmp: Path, name: str) -> Path:
    if Path(spec).is_dir():
        return Path(spec).resolve()
    dest = tmp / name
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(dest),
                    spec], check=True)
    return dest


def _set(cfg: dict, dotted: str) -> None:
    key, _, value = dotted.partition("=")
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def run_side(tree: Path, work: Path, overrides: list[str]) -> float:
    """Run the tiny CI configuration of ``tree`` in ``work``; wall seconds."""
    spec = importlib.util.spec_from_file_location(f"_tiny_{work.name}", tree / "tests/_tiny.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    work.mkdir(parents=True)
    cfg = tiny.tiny_config(work, SHARED_DATA)
    for o in overrides:
        _set(cfg, o)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    weights = REPO / "resources" / "weights"
    if weights.is_dir():    # the workdir's resources/weights is searched first
        (work / "resources").mkdir()
        (work / "resources" / "weights").symlink_to(weights)
    path = os.pathsep.join(p for p in (str(tree / "src"), os.environ.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                           str(tree / "Snakefile"), "--directory", str(work), "--configfile",
                           str(work / "config.yaml"), "--cores", "2"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    if proc.returncode:
        sys.exit(f"{tree}: the run failed\n{proc.stderr[-6000:]}")
    return time.perf_counter() - t0


def _norm(s: pd.Series, work: Path) -> pd.Series:
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        return s.map(lambda v: v.replace(str(work), "<work>") if isinstance(v, str) else v)
    return s


def _cell(v):
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, float) and np.isnan(v):
        return "NaN"
    return v


def _same(a: pd.Series, b: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        return np.array_equal(a.to_numpy(float), b.to_numpy(float), equal_nan=True)
    return [_cell(v) for v in a] == [_cell(v) for v in b]


_PACKED = re.compile(r"^(.+)\((\d+)\)$")


def _joined_selector(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame | None:
    """``b`` with ``selector`` and ``k`` joined as ``name(k)`` where ``a`` (the base) packs
    them into one ``selector`` string and has no ``k`` column; else None."""
    if not ({"selector", "k"} <= set(b.columns) and "selector" in a.columns
            and "k" not in a.columns and len(a) == len(b)):
        return None
    old = a["selector"].dropna()   # an empty table has nothing to parse: joined as well
    if not old.map(lambda v: isinstance(v, str) and bool(_PACKED.match(v))).all():
        return None
    out = b.drop(columns="k")
    out["selector"] = [s if pd.isna(k) else f"{s}({int(k)})"
                       for s, k in zip(b["selector"], b["k"])]
    return out


def compare(base: Path, head: Path) -> list[tuple[str, str]]:
    """(table, verdict) for every Parquet table under either side's ``results/``."""
    rel = lambda w: {p.relative_to(w / "results").as_posix()  # noqa: E731
                     for p in (w / "results").rglob("*.parquet")
                     if not p.relative_to(w / "results").as_posix().startswith(".cache/")}
    a_tabs, b_tabs = rel(base), rel(head)
    out = []
    for t in sorted(a_tabs | b_tabs):
        if t not in b_tabs or t not in a_tabs:
            out.append((t, f"DIFFERS: only in {'base' if t in a_tabs else 'head'}"))
            continue
        a = pd.read_parquet(base / "results" / t)
        b = pd.read_parquet(head / "results" / t)
        joined = _joined_selector(a, b)
        if joined is not None:
            b = joined
        added = [c for c in b.columns if c not in a.columns]
        missing = [c for c in a.columns if c not in b.columns]
        if missing or len(a) != len(b):
            out.append((t, f"DIFFERS: rows {len(a)} vs {len(b)}, columns missing {missing}"))
            continue
        bad = [c for c in a.columns if not _same(_norm(a[c], base), _norm(b[c], head))]
        verdict = f"DIFFERS in {bad}" if bad else "identical"
        out.append((t, verdict + (f" (added columns {added})" if added else "")
                    + (" (selector+k joined as name(k))" if joined is not None else "")))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision or source tree")
    ap.add_argument("--head", default=str(REPO), help="git revision or source tree")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", type=Path, help="run here and keep the runs")
    args = ap.parse_args()
    if not SHARED_DATA.is_dir():
        sys.exit(f"{SHARED_DATA} is absent: the CI configuration reads CK+ from it")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        trees = {side: _tree(spec, Path(tmp), side)
                 for side, spec in (("base", args.base), ("head", args.head))}
        works = {side: root / f"run_{side}" for side in trees}
        for side, tree in trees.items():
            print(f"{side}: {tree} ({run_side(tree, works[side], args.set):.0f} s)", flush=True)
        rows = compare(works["base"], works["head"])
        for side, tree in trees.items():
            if not Path(getattr(args, side)).is_dir():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tree)], check=False)
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)
    for t, v in rows:
        print(f"{v.split(' ')[0]:10s} {t}{v[len(v.split(' ')[0]):]}")
    joined = [t for t, v in rows if "joined as name(k)" in v]
    if joined:
        print(f"selector+k of the head joined as name(k) to compare with the base's packed "
              f"selector in {len(joined)} table(s): {', '.join(joined)}")
    n_bad = sum(v.startswith("DIFFERS") for _, v in rows)
    print(f"{len(rows)} tables, {n_bad} differ" + (f" (overrides: {args.set})" if args.set else ""))
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
