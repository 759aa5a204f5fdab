# The workflow's wiring (as common.smk in snakemake-workflows/rna-seq-star-deseq2): the
# configuration and sample sheet validated (schema defaults filled in: rules read them
# without defaults of their own), the videos and their shards, input functions, and, in
# common/, every setting derived from the config (settings.smk) and the aggregated inputs and
# final targets (targets.smk, get_final_output). Rule files read names defined here only.
# Parse time imports only what validation needs (no OpenCV, torch or scikit-learn:
# tests/workflow/test_wiring.py).
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version, validate

min_version("9.0")

_SRC = Path(workflow.basedir) / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from neopain.core.samples import (  # noqa: E402
    SampleSheetError,
    check_study,
    load_samples,
    missing_paths,
)
from neopain.core.runrecord import report_text_path  # noqa: E402
from neopain.deploy.plan import read_predict_sheet  # noqa: E402
from neopain.core.shards import assign as assign_shards  # noqa: E402
from neopain.core.shards import membership_digest  # noqa: E402
from neopain.core.studyconfig import (  # noqa: E402
    ConfigError,
    check_backbones,
    coerce_strings,
    select_run,
)

# --config key='{nested: true}' arrives as strings: read them as the schema's types
_SCHEMA = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
config.update(coerce_strings(dict(config), yaml.safe_load(_SCHEMA.read_text())))
validate(config, schema="../schemas/config.schema.yaml")
if config["positive_label"] not in config["labels"]:
    raise WorkflowError(
        f"config: positive_label {config['positive_label']!r} is not one of labels "
        f"{config['labels']}"
    )
# Everything but the sheet's paths is checked here, before any job; the paths are checked
# when the DAG is built (video_source), so --lint and --dry-run need no data.
try:
    SAMPLES = load_samples(config["samples"], config["labels"], config["data_root"],
                           check_paths=False)
    BACKBONES, PROTOCOLS = select_run(config)  # run.{backbones,protocols}, default: all
    check_study(SAMPLES, config["labels"], PROTOCOLS)
    if workflow.is_main_process:  # not again in every cluster job
        check_backbones(BACKBONES)
except (SampleSheetError, ConfigError) as exc:
    raise WorkflowError(str(exc)) from None
# the sheet's rows against the schema, loaded once (not once per row: 10,000-video sheets)
validate(SAMPLES[["video_id", "subject_id", "path", "label"]].reset_index(drop=True),
         schema="../schemas/samples.schema.yaml", set_default=False)

VIDEOS = list(SAMPLES.index)
# per-video work runs in stable shards of videos (neopain.core.shards, docs/scale.md): one job
# per shard and stage, writing the same per-video files a per-video rule would
SHARDS = assign_shards(VIDEOS, config["shards"]["count"])
SELECTORS = config["select"]["selectors"]


wildcard_constraints:
    video=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone=r"[A-Za-z0-9_]+",
    layer=r"[A-Za-z0-9][A-Za-z0-9_]*",
    protocol=r"[A-Za-z0-9_]+",
    selector=r"[A-Za-z0-9_]+",
    fold=r"\d+",


_PATHS_CHECKED = []
# video_id -> absolute source path, looked up per job while planning (SAMPLES.loc would
# deep-copy the sheet's attrs on every lookup: minutes for 10,000 videos)
_ABSPATH = dict(zip(SAMPLES.index, SAMPLES["abspath"]))


def video_source(wildcards):
    """The video's path; every sheet path is checked once, when the DAG is built: a real
    run stops naming each missing path's line, a dry run warns and plans without it."""
    path = _ABSPATH[wildcards.video]  # a dict: SAMPLES.loc deep-copies the sheet's attrs
    if not _PATHS_CHECKED:
        _PATHS_CHECKED.append(True)
        problems = missing_paths(SAMPLES)
        if problems and not workflow.dryrun:
            raise WorkflowError("sample sheet paths missing:\n" + "\n".join(problems))
        for problem in problems:
            logger.warning(f"dry run without the data: {problem}")
    return path if not workflow.dryrun or os.path.exists(path) else []


def video_params(wildcards):
    return {"video_id": wildcards.video, "path": _ABSPATH[wildcards.video]}


def shard_sources(videos):
    """Input function: the sources of a shard's videos (checked as video_source does)."""

    def sources(wildcards):
        found = (video_source(SimpleNamespace(video=v)) for v in videos)
        return [p for p in found if p != []]

    return sources


def shard_videos(videos):
    """The per-video params of a shard's videos (video_id, path), in shard order."""
    return [{"video_id": v, "path": _ABSPATH[v]} for v in videos]


def shard_manifest(stage, shard):
    """The manifest a shard job writes last (neopain.core.shards.write_manifest). Its name
    carries a digest of the shard's videos: Snakemake checks only the outputs a consumer
    asks for, so a shard that gains or loses a video must be asked for a new file."""
    return f"results/shards/{stage}/{shard}.{membership_digest(SHARDS[shard])}.json"


def per_video(pattern, videos):
    """``pattern`` with {video} filled in for each video of a shard (other wildcards kept)."""
    return [pattern.replace("{video}", v) for v in videos]


def stage(name):
    """The effective configuration of one stage (its params; a change reruns it)."""
    return dict(config[name])


include: "common/settings.smk"
include: "common/targets.smk"
