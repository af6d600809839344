"""Colour retention: give a stylized image the colour statistics of its source."""
from __future__ import annotations

import cv2
import numpy as np


def match_colors(stylized: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Match the a and b channels (mean and spread) of ``stylized`` to ``source`` in CIE Lab.

    Lightness is left alone: the anime look lives largely in its shading and line work,
    while the colour cast of a style is what users ask to undo. Both arrays are HxWx3 RGB uint8.
    """
    out = cv2.cvtColor(stylized.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    ref = cv2.cvtColor(source.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    for c in (1, 2):
        o, r = out[:, :, c], ref[:, :, c]
        o_std = float(o.std())
        scale = float(r.std()) / o_std if o_std > 1e-3 else 1.0
        out[:, :, c] = (o - float(o.mean())) * scale + float(r.mean())
    rgb = cv2.cvtColor(out, cv2.COLOR_Lab2RGB)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
