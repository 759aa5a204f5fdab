"""Weights pins: what a sha256 pin is, when two pins agree, and the error of a bad file.

A pin is a full sha256 (64 hex digits) or a prefix of at least 8 (torchvision's file
names carry one). Imported by the registry, the weights-file lookup and the checkpoint
format alike, so it depends on none of them.
"""

from __future__ import annotations

import re


class WeightsError(RuntimeError):
    """A weights file is missing, unpinned, or does not match its pinned sha256."""


def normalise_pin(pin: str, what: str) -> str:
    pin = str(pin).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", pin):
        raise WeightsError(f"{what}: {pin!r} is not a sha256 (64 hex digits) or a prefix of "
                           f"at least 8")
    return pin


def pins_agree(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)
