"""Re-hash a run's inputs and outputs against its run record and report any drift.

``neopain verify results/`` reads ``results/provenance/run.json`` (see
:mod:`neopain.core.runrecord`) and checks, without trusting any stored hash:

* every recorded output still exists and has the recorded sha256 (``changed``/``missing``);
* every raw input (video file, frame folder, sample sheet) still has its sha256;
* every weight file that can be found still has the sha256 pinned in the tables;
* the chain is consistent: each job's inputs, as hashed by Snakemake when the job ran
  (``inputs_at_run``, files up to Snakemake's checksum size limit), equal the inputs'
  current hashes -- otherwise the output is stale (made from other inputs);
* each table's provenance sources (``video:<id>``, ``samples``...) agree with the hashes of
  the raw inputs in the record;
* files under ``results/`` that the record does not list are reported as ``unrecorded``
  (a note, not drift).

Exit status of the CLI: 0 no drift, 1 drift, 2 no or unreadable record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from neopain.core.provenance import source_sha256
from neopain.core.runrecord import RECORD_PATH, _result_files


@dataclass
class VerifyReport:
    record: Path
    checked: int = 0
    drift: list[tuple[str, str, str]] = field(default_factory=list)   # (kind, path, detail)
    notes: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift

    def add(self, kind: str, path: str, detail: str) -> None:
        self.drift.append((kind, path, detail))

    def summary(self) -> str:
        lines = [f"{self.record}: {self.checked} files re-hashed, "
                 f"{len(self.drift)} drift, {len(self.notes)} notes"]
        lines += [f"DRIFT {k:<10} {p}: {d}" for k, p, d in self.drift]
        lines += [f"note  {k:<10} {p}: {d}" for k, p, d in self.notes]
        return "\n".join(lines)


def _locate(results: Path) -> tuple[Path, Path]:
    """(record path, workdir) for a results folder, a record file or a workdir."""
    results = Path(results)
    if results.is_file():
        rec = results
        return rec, rec.resolve().parents[2]
    if (results / "provenance" / "run.json").is_file():
        return results / "provenance" / "run.json", results.resolve().parent
    if (results / RECORD_PATH).is_file() or (results / RECORD_PATH.parts[0]).is_dir():
        return results / RECORD_PATH, results.resolve()  # a workdir
    # a results folder without a record (or no folder at all): name the expected record
    return results / "provenance" / "run.json", results.resolve().parent


def verify(results: str | os.PathLike = "results") -> VerifyReport:
    rec_path, workdir = _locate(Path(results))
    report = VerifyReport(rec_path)
    if not rec_path.is_file():
        raise FileNotFoundError(f"{rec_path}: no run record (run the workflow or "
                                f"`neopain record` first)")
    rec = json.loads(rec_path.read_text())
    current: dict[str, str | None] = {}

    def rehash(key: str) -> str | None:
        if key not in current:
            path = Path(key) if Path(key).is_absolute() else workdir / key
            current[key] = source_sha256(path) if path.exists() else None
            report.checked += 1
        return current[key]

    for kind, section in (("output", rec.get("outputs", {})), ("input", rec.get("inputs", {}))):
        for key, ent in section.items():
            if ent.get("missing"):
                continue
            now = rehash(key)
            if now is None:
                report.add("missing", key, f"recorded {kind} no longer exists")
            elif now != ent.get("sha256"):
                report.add("changed", key,
                           f"{kind} sha256 {ent.get('sha256', '')[:16]}... is now {now[:16]}...")
    for name, ent in (rec.get("weights") or {}).items():
        if ent.get("path"):
            now = rehash(ent["path"])
            if now is None:
                report.add("missing", ent["path"], f"weights {name} no longer exist")
            elif now != ent["sha256"]:
                report.add("changed", ent["path"], f"weights {name} sha256 differs from "
                           f"the {ent['sha256'][:16]}... the tables were made with")
        else:
            report.notes.append(("weights", name, "file not found here; not re-hashed"))

    raw_by_hash = {ent.get("sha256") for ent in rec.get("inputs", {}).values()}
    for key, ent in rec.get("outputs", {}).items():
        for inp, digest in (ent.get("inputs_at_run") or {}).items():
            now = rehash(inp)
            if now is not None and now != digest:
                report.add("stale", key, f"made from {inp} with sha256 {digest[:16]}..., "
                           f"which is now {now[:16]}...")
        if ent.get("rule") is None:
            report.notes.append(("unmade", key, "no Snakemake job record for this file"))
        for name, digest in ((ent.get("provenance") or {}).get("sources") or {}).items():
            if name.startswith("video:") and digest not in raw_by_hash:
                report.add("source", key, f"provenance source {name} sha256 {digest[:16]}... "
                           f"matches no input of the record")

    recorded = set(rec.get("outputs", {}))
    for f in _result_files(workdir / "results", [rec_path]):
        key = f.relative_to(workdir).as_posix()
        if key not in recorded:
            report.notes.append(("unrecorded", key, "not in the run record"))
    return report


def main(results: str) -> int:
    try:
        report = verify(results)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(report.summary())
    print("OK: no drift" if report.ok else "DRIFT: see above")
    return 0 if report.ok else 1
