"""The workflow's wiring (workflow/rules/common.smk and common/): one home, light parsing,
defaults from the schema only.

* Planning the DAG (a dry run with every optional stage on) imports no OpenCV, torch or
  scikit-learn, and the predict sheet read by the wiring gives each video its baseline.
* No rule file reads a name another rule file defines (include order does not matter):
  module-level names in rule files are private to them; the rest lives in common.
* No `.get(key, default)` in workflow/ for a key the schema gives a default.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from _paths import REPO
from _tiny import SNAKEMAKE, snakemake, snakemake_cmd, tiny_config

RULES = REPO / "workflow" / "rules"
HEAVY = ("cv2", "torch", "sklearn")

# runs Snakemake's CLI in-process and writes the heavy modules it imported to argv[1]
_WRAPPER = (
    "import atexit, json, sys\n"
    "out = sys.argv.pop(1)\n"
    "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & set(%r))\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(heavy())))\n"
    "from snakemake.cli import main\n"
    "sys.argv[0] = 'snakemake'\n"
    "main()\n" % (HEAVY,)
)


def _study(work: Path) -> dict:
    """The tiny config with every optional stage on and a predict sheet of three videos."""
    cfg = tiny_config(work, work / "data")  # no data: a dry run plans without it
    videos = work / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "base_a.mp4", "base_any.mp4"):
        (videos / name).write_bytes(b"")
    (work / "predict.csv").write_text(
        "video_id,path,baseline_path\n"
        "a,videos/a.mp4,videos/base_a.mp4\n"   # relative to the sheet's folder
        f"b,{videos / 'b.mp4'},\n"              # no baseline: predict.baseline_video
        "# a comment line\n"
        "c,videos/c.mp4,\n")
    (work / "aux").mkdir()
    cfg["actions"].update(enabled=True, intensity={"enabled": True})
    cfg["texture"]["lbp"]["enabled"] = True
    cfg["finetune"].update(enabled=True)
    cfg["finetune"]["cascade"]["aux"]["samples"] = "aux"
    cfg["export"].update(enabled=True, configuration="best")
    cfg["predict"].update(model="results/export/model.neopain", videos="predict.csv",
                          baseline_video=str(videos / "base_any.mp4"))
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def _jobs(output: str, rule: str) -> list[dict[str, str]]:
    """The dry run's printed jobs of ``rule``: {field: text} (input, output, wildcards)."""
    jobs = []
    for block in re.split(r"\n(?=\S*\s*rule \w+:)", output):
        if re.match(rf"\S*\s*rule {rule}:", block.strip()):
            jobs.append(dict(re.findall(r"^\s+(\w+): (.*)$", block, re.M)))
    return jobs


def test_planning_imports_no_heavy_library_and_reads_the_predict_sheet(tmp_path):
    _study(tmp_path)
    found = tmp_path / "heavy.json"
    cmd = [sys.executable, "-c", _WRAPPER, str(found),
           *snakemake_cmd(tmp_path, "--dry-run")[len(SNAKEMAKE):]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert json.loads(found.read_text()) == [], out[-2000:]
    # every optional stage is planned (the dry run really went through each rule file)
    for rule in ("export", "predict", "finetune", "cascade_stage1", "actions_intensity",
                 "texture", "evaluate_fusion", "nested_summary", "report_pages"):
        assert re.search(rf"rule {rule}:", out), rule
    predict = {j["wildcards"]: j["input"].split(", ") for j in _jobs(out, "predict")}
    videos = tmp_path / "videos"
    assert predict == {
        "pvideo=a": ["results/export/model.neopain", str(videos / "a.mp4"),
                     str(videos / "base_a.mp4")],
        "pvideo=b": ["results/export/model.neopain", str(videos / "b.mp4"),
                     str(videos / "base_any.mp4")],
        "pvideo=c": ["results/export/model.neopain", str(videos / "c.mp4"),
                     str(videos / "base_any.mp4")],
    }
    # export.configuration best: every layer's scores, Table 5 and every split
    (export,) = _jobs(out, "export")
    assert {"results/evaluation/table5.parquet",
            "results/scores/mobilenet_v2/penultimate/loso/relieff.parquet",
            "results/scores/lbp/grid/loso/relieff.parquet",
            "results/scores/actions/video/loso/relieff.parquet",
            "results/splits/loso.parquet"} <= set(export["input"].split(", "))


def test_a_bad_predict_sheet_row_stops_planning_naming_it(tmp_path):
    _study(tmp_path)
    (tmp_path / "predict.csv").write_text(
        "video_id,path,baseline_path\na,videos/a.mp4,\na,videos/b.mp4,\n")
    proc = snakemake(tmp_path, "--dry-run", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "predict.videos: predict.csv: line 3 (video_id='a'): duplicate video_id" in out
    (tmp_path / "predict.csv").write_text(
        "video_id,path,baseline_path\na,videos/a.mp4,videos/gone.mp4\n")
    proc = snakemake(tmp_path, "--dry-run", check=False)
    assert proc.returncode != 0
    assert ("predict.videos: predict.csv: line 2 (video_id='a'): baseline_path "
            "'videos/gone.mp4' does not exist") in proc.stdout + proc.stderr


def _code(path: Path) -> str:
    """The file without comments and strings' contents (names only)."""
    text = re.sub(r'"""[\s\S]*?"""', '""', path.read_text())
    text = re.sub(r'"[^"\n]*"|\'[^\'\n]*\'', '""', text)
    return re.sub(r"#[^\n]*", "", text)


def _defined(code: str) -> set[str]:
    """Module-level names a Snakemake file defines (assignments, defs, imports, loops)."""
    names = set(re.findall(r"^([A-Za-z_]\w*)\s*(?:\+|-|\|)?=(?!=)", code, re.M))
    names |= set(re.findall(r"^def (\w+)", code, re.M))
    names |= set(re.findall(r"^import \w+(?: as (\w+))?", code, re.M)) - {""}
    for targets in re.findall(r"^\s*for ([\w, ]+) in [^\n]*:$", code, re.M):
        names |= {t.strip() for t in targets.split(",")}
    return names


def test_rule_files_read_only_names_of_the_wiring():
    rule_files = sorted(p for p in RULES.glob("*.smk") if p.name != "common.smk")
    wiring = [RULES / "common.smk", *sorted((RULES / "common").glob("*.smk"))]
    assert len(rule_files) >= 10 and len(wiring) >= 2
    code = {p: _code(p) for p in [*rule_files, *wiring, REPO / "Snakefile"]}
    defined = {p: _defined(code[p]) for p in code}
    for p in rule_files:  # a rule file's own module-level names are private
        public = sorted(n for n in defined[p] if not n.startswith("_"))
        assert not public, f"{p.name} defines {public}: settings belong in common/"
    for p in rule_files + wiring:
        used = set(re.findall(r"\b[A-Za-z_]\w*\b", code[p]))
        for other in rule_files:
            if other != p:
                leaked = sorted((defined[other] - defined[p]) & used)
                assert not leaked, f"{p.name} reads {leaked} from {other.name}"
    # the Snakefile: includes and rule all, which asks for get_final_output() only
    snakefile = code[REPO / "Snakefile"]
    assert re.search(r"rule all:\s+input:\s+get_final_output\(\),\s+default_target", snakefile)
    assert not defined[REPO / "Snakefile"]


def _schema_defaults(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and "default" in sub:
                out.add(key)
        for sub in node.values():
            _schema_defaults(sub, out)
    elif isinstance(node, list):
        for sub in node:
            _schema_defaults(sub, out)
    return out


# keys read with .get whose schema default (if any) is elsewhere in the tree
_NOT_DEFAULTED_HERE = {
    "n_splits": "protocols.<name>.n_splits (group_kfold) has none; classify.search's has",
}


def test_no_rule_repeats_a_schema_default():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    defaulted = _schema_defaults(schema, set())
    assert {"size", "video_aggregation", "n_boot", "k", "preset", "device"} <= defaulted
    files = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]
    found = []
    for path in files:
        for m in re.finditer(r"\.get\(\s*[\"'](\w+)[\"']\s*(,)?", path.read_text()):
            key, has_default = m.group(1), m.group(2)
            if key in defaulted and key not in _NOT_DEFAULTED_HERE:
                found.append(f"{path.relative_to(REPO)}: .get({key!r}"
                             f"{', default' if has_default else ''})")
    assert not found, "schema-defaulted keys read with .get (read config[key]):\n" + \
        "\n".join(found)
