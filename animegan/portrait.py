"""Portrait mode: find the largest face with OpenCV's bundled detector and crop around it."""
from __future__ import annotations

import functools

import cv2
import numpy as np

DETECT_SIDE = 800  # detection runs on a copy no larger than this: fast, and faces stay findable


@functools.lru_cache(maxsize=1)
def _detector() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def largest_face(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the largest frontal face in an RGB uint8 image, or None."""
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(min(gray.shape) * 0.08))
    faces = _detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
    return (round(x / scale), round(y / scale), round(fw / scale), round(fh / scale))


def portrait_box(image_size: tuple[int, int], face: tuple[int, int, int, int],
                 margin: float = 0.8) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) around a face with ``margin`` face-widths of room,
    shifted to stay inside the image and shrunk only if the image is too small."""
    width, height = image_size
    x, y, fw, fh = face
    side = int(round(max(fw, fh) * (1 + 2 * margin)))
    side = max(1, min(side, width, height))
    cx, cy = x + fw / 2, y + fh / 2 - 0.1 * fh  # a little more room above for hair
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side
