"""Augmentation of a training batch, drawn from a seeded generator per epoch and applied on
the device: horizontal flip, a small rotation (``rotate`` degrees, or any in-plane angle
with ``rotate_any`` for infants lying at any angle), scale and shift,
brightness/contrast/saturation jitter."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, gen: torch.Generator, aug: Mapping[str, Any]) -> torch.Tensor:
    """Random flip / rotation / scale / shift and colour jitter of a batch in [0, 1].

    The random parameters are drawn on the CPU from ``gen`` (the same draws whatever
    the device), the warp (``grid_sample``, zero padding as the crops' black border)
    runs on ``x``'s device."""
    n = x.shape[0]
    u = torch.rand(8, n, generator=gen, dtype=torch.float64)
    if aug.get("rotate_any"):
        ang = u[0] * 2 * math.pi
    else:
        ang = (u[0] * 2 - 1) * math.radians(float(aug.get("rotate", 0) or 0))
    scale = 1 + (u[1] * 2 - 1) * float(aug.get("scale", 0) or 0)
    shift = float(aug.get("shift", 0) or 0) * 2                 # [-1, 1] grid coordinates
    tx, ty = (u[2] * 2 - 1) * shift, (u[3] * 2 - 1) * shift
    flip = torch.where(u[4] < 0.5, -1.0, 1.0) if aug.get("flip") else torch.ones(n,
                                                                                 dtype=u.dtype)
    if bool((ang != 0).any() or (scale != 1).any() or (tx != 0).any() or (ty != 0).any()
            or (flip != 1).any()):
        c, s = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.stack([torch.stack([c * flip, -s, tx], 1),
                             torch.stack([s * flip, c, ty], 1)], 1).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    b = float(aug.get("brightness", 0) or 0)
    ct = float(aug.get("contrast", 0) or 0)
    sat = float(aug.get("saturation", 0) or 0)
    if b or ct or sat:
        fb = (1 + (u[5] * 2 - 1) * b).to(x.device, x.dtype).view(n, 1, 1, 1)
        fc = (1 + (u[6] * 2 - 1) * ct).to(x.device, x.dtype).view(n, 1, 1, 1)
        fs = (1 + (u[7] * 2 - 1) * sat).to(x.device, x.dtype).view(n, 1, 1, 1)
        w = torch.tensor((0.299, 0.587, 0.114), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = x * fb
        mean = (x * w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (x - mean) * fc + mean
        grey = (x * w).sum(1, keepdim=True)
        x = (grey + (x - grey) * fs).clamp_(0.0, 1.0)
    return x
