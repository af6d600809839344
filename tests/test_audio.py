"""Video sound is the source's sound, over the same span: compared by content, not only by length.

The clips carry a chirp (a tone whose frequency rises steadily), so every instant of the track
is distinct: a silent track, another sound, or the right sound shifted in time all fail the
cross-correlation checks here, where a length check would pass them. Both tracks are decoded
by ffmpeg itself, outside the code under test.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from animegan.video import stylize_video

RATE = 16_000  # decoding rate of both tracks for the comparison
F0, SWEEP = 200.0, 800.0  # the chirp's frequency at t: F0 + SWEEP * t (Hz)


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As in test_video.py: ffmpeg and the pipeline's threads share the cores with the model."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _chirp_clip(path: Path, seconds: float) -> Path:
    """A 64x48 test pattern at 10 fps with a chirp from F0 Hz rising SWEEP Hz a second, as AAC in MP4."""
    chirp = f"aevalsrc=exprs='0.5*sin(2*PI*({F0}*t+{SWEEP / 2}*t*t))':s=44100:d={seconds}"
    subprocess.run([_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10",
                    "-f", "lavfi", "-i", chirp, "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", str(path)], check=True, timeout=60)
    return path


def _pcm(path: Path) -> np.ndarray:
    """The first audio track as mono float samples at RATE, decoded by ffmpeg."""
    raw = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(RATE),
                          "-f", "f32le", "-"], check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(raw, np.float32).astype(np.float64)


def _best_lag(source: np.ndarray, out: np.ndarray) -> tuple[int, float]:
    """The offset (in samples) of ``out`` within ``source`` that matches best, and the normalised
    correlation there (1.0: the same waveform)."""
    from scipy.signal import correlate

    scores = correlate(source, out, mode="valid" if len(source) >= len(out) else "full", method="fft")
    lag = int(np.argmax(scores))
    if len(source) < len(out):
        lag -= len(out) - 1
    lo, hi = max(lag, 0), min(len(source), lag + len(out))
    a, b = source[lo:hi], out[lo - lag:hi - lag]
    return lag, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _dominant_frequency(samples: np.ndarray) -> float:
    window = samples * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(window, n=8 * len(samples)))
    return float(np.argmax(spectrum) * RATE / (8 * len(samples)))


def test_the_output_carries_the_source_sound_in_time(style: str, tmp_path: Path) -> None:
    src = _chirp_clip(tmp_path / "in.mp4", 1.5)
    result = stylize_video(src, tmp_path / "out.mp4", style)
    assert result.had_audio
    source, out = _pcm(src), _pcm(result.path)
    assert len(out) == pytest.approx(len(source), abs=0.06 * RATE)
    assert np.sqrt(np.mean(out ** 2)) > 0.2  # not silence: the chirp's amplitude 0.5 has RMS 0.35
    lag, correlation = _best_lag(np.pad(source, RATE // 2), out)  # search +-0.5 s around lag 0
    assert abs(lag - RATE // 2) <= RATE // 1000  # in time, within 1 ms
    assert correlation > 0.95  # the same waveform (two AAC encodings apart)


def test_a_trimmed_video_keeps_the_sound_of_its_span(style: str, tmp_path: Path) -> None:
    """--start 0.5 --end 1.2: the sound of 0.5 s to 1.2 s, not that of the first 0.7 s."""
    src = _chirp_clip(tmp_path / "in.mp4", 1.5)
    result = stylize_video(src, tmp_path / "out.mp4", style, start=0.5, end=1.2)
    source, out = _pcm(src), _pcm(result.path)
    assert len(out) == pytest.approx(0.7 * RATE, abs=0.06 * RATE)
    lag, correlation = _best_lag(source, out)
    assert abs(lag - 0.5 * RATE) <= RATE // 1000 and correlation > 0.95
    # The same by frequency, which needs no alignment: the chirp's pitch in the middle of the
    # output is the pitch at 0.85 s of the source (F0 + SWEEP * 0.85 = 880 Hz), not at 0.35 s (480 Hz).
    middle = out[int(0.3 * RATE):int(0.4 * RATE)]
    assert _dominant_frequency(middle) == pytest.approx(F0 + SWEEP * 0.85, abs=30)
