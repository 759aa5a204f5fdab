import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

_SRC = Path(workflow.basedir) / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from neopain.samples import SampleSheetError, load_samples  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")
if config["positive_label"] not in config["labels"]:
    raise WorkflowError(
        f"config: positive_label {config['positive_label']!r} is not one of labels "
        f"{config['labels']}"
    )
try:
    SAMPLES = load_samples(config["samples"], config["labels"], config.get("data_root"))
except SampleSheetError as exc:
    raise WorkflowError(str(exc)) from None
for _rec in SAMPLES[["video_id", "subject_id", "path", "label"]].to_dict("records"):
    validate(_rec, schema="../schemas/samples.schema.yaml")

VIDEOS = list(SAMPLES.index)
BACKBONES = config["extract"]["backbones"]
PROTOCOLS = config["protocols"]
SELECTORS = config["select"]["selectors"]
LAYER_TARGETS = [(b, layer) for b, spec in BACKBONES.items() for layer in spec["layers"]]
# texture baselines (texture.smk): enabled ones are one more backbone x layer ("grid")
TEXTURE = [m for m, spec in (config.get("texture") or {}).items() if spec.get("enabled")]
LAYER_TARGETS += [(m, "grid") for m in TEXTURE]


wildcard_constraints:
    video=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone=r"[A-Za-z0-9_]+",
    layer=r"[A-Za-z0-9][A-Za-z0-9_]*",
    protocol=r"[A-Za-z0-9_]+",
    selector=r"[A-Za-z0-9_]+",


def video_source(wildcards):
    return SAMPLES.loc[wildcards.video, "abspath"]


def video_params(wildcards):
    row = SAMPLES.loc[wildcards.video]
    return {"video_id": row["video_id"], "path": row["abspath"]}


def stage(name):
    """The effective configuration of one stage (its params; a change reruns it)."""
    return dict(config.get(name, {}))


def all_layer_files(pattern):
    return [pattern.format(backbone=b, layer=layer) for b, layer in LAYER_TARGETS]
