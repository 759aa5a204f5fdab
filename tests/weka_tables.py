"""Weka 3.6 helpers for the tests: ARFF writing, running Weka, a real feature table.

As a script, writes the deterministic ckplus48 feature table as ARFF (the input
of the committed fixture ``tests/fixtures/weka/ckplus48_pixels_*.tsv``):

    .venv/bin/python tests/weka_tables.py ../shared/data /tmp/ckplus48_pixels.arff
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from _paths import SHARED_REFERENCE

WEKA_JAR = Path(os.environ.get("WEKA_JAR", "/usr/share/java/weka.jar"))
REFERENCE = SHARED_REFERENCE / "weka"
WEKA_SCORES = REFERENCE / "WekaScores.java"


def weka_missing() -> str | None:
    """Why Weka cannot run here (None when it can)."""
    if shutil.which("java") is None:
        return "java not found (apt-get install weka pulls in a JRE)"
    if not WEKA_JAR.is_file():
        return f"{WEKA_JAR} not found (Debian package weka; or set WEKA_JAR)"
    if not WEKA_SCORES.is_file():
        return f"{WEKA_SCORES} not found (shared reference recipe)"
    return None


def write_arff(path: Path, X: np.ndarray, y, names=None, relation="neopain") -> Path:
    """Numeric attributes + nominal class (last); values written as exact doubles."""
    X = np.asarray(X, dtype=np.float64)
    labels = sorted(set(map(str, y)))
    names = names or [f"f{j}" for j in range(X.shape[1])]
    with open(path, "w") as fh:
        fh.write(f"@relation {relation}\n")
        for nm in names:
            fh.write(f"@attribute {nm} numeric\n")
        fh.write("@attribute class {" + ",".join(labels) + "}\n@data\n")
        for row, lab in zip(X, y):
            fh.write(",".join(repr(float(v)) for v in row) + f",{lab}\n")
    return Path(path)


def run_weka_scores(arff: Path, timeout: int = 600) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(attribute names, ReliefF scores, SU scores) from ``WekaScores.java``."""
    out = subprocess.run(["java", "-cp", str(WEKA_JAR), str(WEKA_SCORES), str(arff)],
                         capture_output=True, text=True, timeout=timeout, check=True).stdout
    return parse_scores(out)


def parse_scores(text: str):
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    return ([r["attribute"] for r in rows], np.array([float(r["relieff"]) for r in rows]),
            np.array([float(r["su"]) for r in rows]))


RANKERS = {
    "relieff": ["weka.attributeSelection.ReliefFAttributeEval", "-K", "10"],
    "su": ["weka.attributeSelection.SymmetricalUncertAttributeEval"],
}


def run_weka_ranking(arff: Path, selector: str, timeout: int = 600) -> str:
    """Weka's own ``Ranker`` output (text) for ``selector`` (relieff or su)."""
    cmd = ["java", "-cp", str(WEKA_JAR), *RANKERS[selector], "-i", str(arff),
           "-s", "weka.attributeSelection.Ranker"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          check=True).stdout


def parse_ranking(text: str) -> list[int]:
    """0-based attribute indices in Weka's ``Ranked attributes:`` order."""
    part = text.split("Ranked attributes:", 1)[1]
    out = []
    for line in part.splitlines():
        m = re.match(r"\s*(-?[0-9.eE+-]+|NaN)\s+(\d+)\s+\S+", line)
        if m:
            out.append(int(m.group(2)) - 1)
        elif out and not line.strip():
            break
    return out


def ckplus_pixel_table(shared_data: Path, step: int = 3, block: int = 4):
    """A deterministic real feature table from ckplus48: every ``step``-th crop of the
    CSV (file order), features = means of ``block`` x ``block`` pixel blocks / 255
    (48 / 4 = 12 x 12 = 144 attributes), class ``happy`` vs ``other``. With ``step`` 3
    it holds one crop of each of the 327 sequences (CK+ gives 3 per sequence).

    Returns (X float64, labels, subjects, names).
    """
    from PIL import Image

    rows = list(csv.DictReader(open(shared_data / "ckplus48.csv")))[::step]
    X, labels, subjects = [], [], []
    for r in rows:
        img = np.asarray(Image.open(shared_data / r["image"]).convert("L"), dtype=np.float64)
        h, w = img.shape
        blocks = img.reshape(h // block, block, w // block, block).sum(axis=(1, 3))
        X.append((blocks / (block * block) / 255.0).ravel())
        labels.append("happy" if r["emotion"] == "happy" else "other")
        subjects.append(r["subject"])
    names = [f"px_{i // (48 // block)}_{i % (48 // block)}" for i in range(len(X[0]))]
    return np.array(X), np.array(labels), np.array(subjects), names


if __name__ == "__main__":
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    X, labels, _, names = ckplus_pixel_table(data)
    write_arff(out, X, labels, names, relation="ckplus48_pixels")
    print(f"{out}: {X.shape[0]} instances x {X.shape[1]} attributes")
