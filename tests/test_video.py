"""Video to anime on short clips made here with the bundled ffmpeg (tiny frames, a few seconds).

References come from outside the code under test: source frames are decoded by ffmpeg itself
(which applies rotation on its own), the stylized reference is a direct ``Stylizer`` call, and
audio length is measured by decoding the audio track.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from animegan import video as video_mod
from animegan.errors import AnimeGANError
from animegan.stylize import get_stylizer
from animegan.video import VideoCancelled, probe_video, stylize_video
from conftest import needs_cxx

FFMPEG = video_mod.ffmpeg_exe()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The pipeline's decoder, encoder and ffmpeg share the cores with the model; on a small busy
    machine one intra-op thread avoids oversubscription (which slows the model several-fold)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_clip(path: Path, seconds: float = 1.5, size: tuple[int, int] = (96, 64), rate: int = 10,
              audio: bool = True, rotation: int | None = None, preset: str = "veryfast") -> Path:
    """A test pattern whose hue turns steadily (so every frame differs), with a 440 Hz tone."""
    w, h = size
    args = [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i",
            f"testsrc2=size={w}x{h}:rate={rate},hue=H=2*PI*t*0.4:s=1.5"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac"] if audio else []
    target = path if rotation is None else path.with_name("plain_" + path.name)
    subprocess.run([*args, str(target)], check=True)
    if rotation is not None:
        subprocess.run([FFMPEG, "-v", "error", "-y", "-display_rotation", str(rotation), "-i", str(target),
                        "-c", "copy", str(path)], check=True)
    return path


def ffmpeg_frames(path: Path, size: tuple[int, int]) -> np.ndarray:
    """All frames as ffmpeg decodes them (rotation applied by ffmpeg), N x H x W x 3 RGB."""
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    w, h = size
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def audio_seconds(path: Path) -> float:
    """Length of the first audio track by decoding it (0.0 when there is none)."""
    proc = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0?", "-ac", "1", "-ar", "8000",
                           "-f", "s16le", "-"], capture_output=True, check=True)
    return len(proc.stdout) / 2 / 8000


def stream_line(path: Path) -> str:
    text = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return next(line for line in text.splitlines() if "Video:" in line)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ----------------------------------------------------------------------------------------
# What comes out
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", [90, -90])
def test_frames_are_stylized_in_order_and_upright(style: str, tmp_path: Path, rotation: int | None) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=1.0, rotation=rotation)
    upright = (64, 96)
    result = stylize_video(src, tmp_path / "out.mp4", style)
    assert (result.width, result.height) == upright
    info = probe_video(result.path)
    assert info.rotation == 0 and (info.width, info.height) == upright  # turned once, no tag left behind
    source = ffmpeg_frames(src, upright)
    out = ffmpeg_frames(result.path, upright)
    direct = np.stack(get_stylizer(style).run_arrays(list(source)))
    assert len(out) == len(source) == result.frames == 10
    # Each written frame is the stylizer's output for the same source frame (up to H.264 loss) ...
    distances = np.array([[mad(o, d) for d in direct] for o in out])
    assert list(distances.argmin(axis=1)) == list(range(len(out)))
    assert distances.diagonal().max() < 6.0
    # ... and far from the source frame itself and from a frame turned the wrong way.
    assert mad(out, source) > 40.0
    assert mad(out, np.rot90(direct, 2, axes=(1, 2))) > 4 * distances.diagonal().mean()


@pytest.mark.parametrize("audio", [True, False])
def test_keeps_rate_count_length_and_sound(style: str, tmp_path: Path, audio: bool) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=1.0, audio=audio, size=(64, 48))
    result = stylize_video(src, tmp_path / "out.mp4", style, batch_size=3)
    source_info, out_info = probe_video(src), probe_video(result.path)
    assert result.frames == 10 and result.fps == pytest.approx(10.0) and result.seconds == pytest.approx(1.0)
    assert out_info.fps == pytest.approx(source_info.fps)
    assert out_info.duration == pytest.approx(source_info.duration, abs=0.06)
    assert out_info.has_audio is audio is result.had_audio
    if audio:
        assert audio_seconds(result.path) == pytest.approx(audio_seconds(src), abs=0.06)
    cap = cv2.VideoCapture(str(result.path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    line = stream_line(result.path)
    assert "h264" in line and "yuv420p" in line
    data = result.path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: playable while it downloads


@needs_cxx
def test_compiled_network_writes_the_eager_frames(style: str, tmp_path: Path) -> None:
    import torch
    from torch._dynamo.utils import counters

    from animegan import device as policy
    from animegan.stylize import Stylizer

    src = make_clip(tmp_path / "in.mp4", seconds=1.0, audio=False, size=(64, 48))
    eager = stylize_video(src, tmp_path / "eager.mp4", style, batch_size=3)
    torch._dynamo.reset()  # an earlier test's graph of the same shape and dtype would be reused uncounted
    counters.clear()
    network = Stylizer(style, compile_mode="default")
    compiled = stylize_video(src, tmp_path / "compiled.mp4", style, batch_size=3, stylizer=network)
    assert compiled.frames == eager.frames == 10  # batches of 3, 3, 3 and a padded 1
    assert not compiled.warnings and network.compile_error is None  # no "torch.compile failed" ...
    assert counters["stats"]["unique_graphs"] == 1  # ... and the compiled graph really ran, once

    # The network itself, before encoding, on the clip's first frames (the compiled batch of 3):
    source = list(ffmpeg_frames(src, (64, 48))[:3])
    by_compiled = np.stack(network.run_arrays(source, tile=0)).astype(np.float32)
    by_eager = np.stack(get_stylizer(style).run_arrays(source, tile=0)).astype(np.float32)
    assert counters["stats"]["unique_graphs"] == 1
    if policy.inference_dtype(torch.device("cpu")) == torch.float32:
        # fp32: the same arithmetic in another order; a pixel may round to the next level.
        assert np.abs(by_compiled - by_eager).max() <= 1 and np.abs(by_compiled - by_eager).mean() < 0.01
    # Both are approximations of the float32 network (bf16: fused kernels round at other points
    # than eager ops); the compiled one may be no further from it than the eager path is.
    full = np.stack(get_stylizer(style, half=False).run_arrays(source, tile=0)).astype(np.float32)
    assert np.abs(by_compiled - full).mean() <= 1.25 * np.abs(by_eager - full).mean() + 0.1

    # The videos: H.264 picks its modes on the exact input, so inputs one level apart in a few
    # pixels encode about a level apart everywhere (fp32: 1.3/255 here, from 0.0001/255 before
    # encoding). So each video is measured against the float32 network's unencoded frames.
    direct = np.stack(get_stylizer(style, half=False).run_arrays(list(ffmpeg_frames(src, (64, 48))), tile=0))
    eager_frames, compiled_frames = ffmpeg_frames(eager.path, (64, 48)), ffmpeg_frames(compiled.path, (64, 48))
    assert mad(compiled_frames, direct) <= 1.25 * mad(eager_frames, direct) + 0.25
    assert mad(compiled_frames, eager_frames) < 3.0


def test_trim_takes_the_right_frames_and_sound(style: str, tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=1.5)
    result = stylize_video(src, tmp_path / "out.mp4", style, start=0.5, end=1.2)
    assert result.frames == 7 and result.seconds == pytest.approx(0.7)
    out = ffmpeg_frames(result.path, (96, 64))
    source = ffmpeg_frames(src, (96, 64))
    direct = get_stylizer(style).run_arrays([source[5], source[11]])
    assert len(out) == 7
    assert mad(out[0], direct[0]) < 6.0 and mad(out[-1], direct[1]) < 6.0
    assert audio_seconds(result.path) == pytest.approx(0.7, abs=0.06)


def test_output_size_cap_and_keep_size(style: str, tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=0.3, size=(128, 96), audio=False)
    capped = stylize_video(src, tmp_path / "capped.mp4", style, max_side=64)
    assert (capped.width, capped.height) == (64, 48)
    assert probe_video(capped.path).width == 64
    kept = stylize_video(src, tmp_path / "kept.mp4", style, max_side=64, keep_size=True)
    assert (probe_video(kept.path).width, probe_video(kept.path).height) == (128, 96)
    # Same network input, so the full-size result is the capped one scaled up.
    small = ffmpeg_frames(capped.path, (64, 48))[0]
    large = ffmpeg_frames(kept.path, (128, 96))[0]
    assert mad(cv2.resize(large, (64, 48), interpolation=cv2.INTER_AREA), small) < 8.0


def test_network_sees_the_styles_working_size(style: str, weights_dir: Path, tmp_path: Path) -> None:
    """As a photo is, each frame is stylized at the style's working size and scaled up to the output's."""
    from animegan.weights import update_metadata

    update_metadata(weights_dir / "test-style.safetensors", {"max_side": 32})
    src = make_clip(tmp_path / "in.mp4", seconds=0.3, size=(128, 96), audio=False)
    worked = stylize_video(src, tmp_path / "worked.mp4", style)
    assert (worked.width, worked.height, worked.work_width, worked.work_height) == (128, 96, 32, 24)
    full = stylize_video(src, tmp_path / "full.mp4", style, work_side=0)
    assert (full.width, full.height, full.work_width, full.work_height) == (128, 96, 128, 96)
    assert probe_video(worked.path).width == 128

    def small(frame: np.ndarray) -> np.ndarray:
        return cv2.resize(frame, (32, 24), interpolation=cv2.INTER_AREA)

    direct = get_stylizer(style).run_arrays([small(ffmpeg_frames(src, (128, 96))[0])])[0]
    near = mad(small(ffmpeg_frames(worked.path, (128, 96))[0]), direct)
    assert near < 8.0
    assert mad(small(ffmpeg_frames(full.path, (128, 96))[0]), direct) > near + 4.0
    with pytest.raises(AnimeGANError, match="working side"):
        stylize_video(src, tmp_path / "bad.mp4", style, work_side=8)


def test_keep_colors_pulls_colour_back_to_the_source(style: str, tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=0.3, audio=False)
    plain = stylize_video(src, tmp_path / "plain.mp4", style)
    kept = stylize_video(src, tmp_path / "kept.mp4", style, keep_colors=True)

    def chroma(path: Path) -> np.ndarray:
        frames = ffmpeg_frames(path, (96, 64))
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2Lab)[:, :, 1:].reshape(-1, 2).mean(0) for f in frames])

    source = chroma(src)
    assert np.abs(chroma(kept.path) - source).mean() < 0.5 * np.abs(chroma(plain.path) - source).mean()


def test_portrait_uses_one_square_crop(style: str, tmp_path: Path) -> None:
    face = REPO / "examples" / "astronaut.jpg"
    if not face.is_file():
        pytest.skip("examples/astronaut.jpg not present")
    src = tmp_path / "face.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-loop", "1", "-i", str(face), "-t", "0.5", "-r", "10",
                    "-vf", "scale=240:240,pad=320:240:40:0", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)],
                   check=True)
    result = stylize_video(src, tmp_path / "out.mp4", style, portrait=True, max_side=64)
    assert (result.width, result.height) == (64, 64) and not result.warnings
    # Without a face the whole frame is kept, with a warning saying so.
    plain = stylize_video(make_clip(tmp_path / "noface.mp4", seconds=0.3, audio=False), tmp_path / "p.mp4", style,
                          portrait=True, max_side=64)
    assert (plain.width, plain.height) == (64, 42) and "no face" in plain.warnings[0]


def test_portrait_mode_uses_the_portrait_style(style: str, portrait_style: str, tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=0.3, size=(64, 48), audio=False)
    frames = {name: ffmpeg_frames(stylize_video(src, tmp_path / f"{name}.mp4", name, portrait=True).path, (64, 48))
              for name in (style, portrait_style)}
    assert np.abs(frames[style].astype(int) - frames[portrait_style]).mean() > 5
    unnamed = ffmpeg_frames(stylize_video(src, tmp_path / "unnamed.mp4", portrait=True).path, (64, 48))
    assert np.array_equal(unnamed, frames[portrait_style])


def test_gif_output(style: str, tmp_path: Path) -> None:
    from PIL import Image

    src = make_clip(tmp_path / "in.mp4", seconds=0.6, size=(64, 48))
    result = stylize_video(src, tmp_path / "out.gif", style)
    with Image.open(result.path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 6 and gif.size == (64, 48)
        assert gif.info["duration"] == pytest.approx(100, abs=10)
    assert not result.had_audio


def test_variable_frame_rate_is_kept_in_length_with_a_warning(style: str, tmp_path: Path) -> None:
    src = tmp_path / "vfr.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5:duration=1",
                    "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=20:duration=0.5", "-filter_complex",
                    "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-fps_mode", "vfr", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(src)], check=True)
    result = stylize_video(src, tmp_path / "out.mp4", style)
    assert "variable frame rate" in result.warnings[0]
    assert result.frames == 15 and result.fps == pytest.approx(10.0, rel=0.02)
    assert probe_video(result.path).duration == pytest.approx(1.5, abs=0.1)


def test_mildly_variable_rate_under_the_warning_threshold_keeps_length_and_sound(style: str, tmp_path: Path) -> None:
    """One frame in 60 dropped (about 29.7 fps on average against a 30 fps time base, under the 2% that warns):
    written at the average rate, so the picture ends with the sound instead of drifting from it."""
    src = tmp_path / "mild-vfr.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=22050", "-t", "6", "-vf", r"select=not(eq(mod(n\,60)\,0))",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(src)], check=True)
    assert "30 tbr" in stream_line(src) and not probe_video(src).variable_fps
    result = stylize_video(src, tmp_path / "out.mp4", style, batch_size=8)
    assert result.frames == 177 and not result.warnings
    span = 6 - 1 / 30  # the first frame is one of those dropped
    assert result.fps == pytest.approx(177 / span, rel=0.005)
    assert result.seconds == pytest.approx(span, abs=1 / 60)  # at 30 fps it would be 5.9 s
    assert audio_seconds(result.path) == pytest.approx(result.seconds, abs=0.1)


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------
def test_bad_inputs_give_one_line_errors(style: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    audio_only = tmp_path / "tone.m4a"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "sine", "-t", "0.5", str(audio_only)], check=True)
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.zeros((32, 32, 3), np.uint8))
    clip = make_clip(tmp_path / "ok.mp4", seconds=0.5, audio=False, preset="ultrafast")
    # A header promising frames with no frame data behind it: zero decodable frames.
    faststart = tmp_path / "fs.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(clip), "-c", "copy", "-movflags", "+faststart",
                    str(faststart)], check=True)
    data = faststart.read_bytes()
    empty = tmp_path / "empty_frames.mp4"
    empty.write_bytes(data[:data.index(b"mdat") + 4])
    cases = [
        (tmp_path / "missing.mp4", "no such file"),
        (text, "not a video"),
        (audio_only, "audio-only"),
        (still, "still image"),
        (empty, "no frames"),
    ]
    for path, words in cases:
        with pytest.raises(AnimeGANError, match=words) as info:
            stylize_video(path, tmp_path / "out.mp4", style)
        assert "\n" not in str(info.value)
    with pytest.raises(AnimeGANError, match="unsupported output"):
        stylize_video(clip, tmp_path / "out.avi", style)
    with pytest.raises(AnimeGANError, match="past the end"):
        stylize_video(clip, tmp_path / "out.mp4", style, start=5.0)
    with pytest.raises(AnimeGANError, match="after start"):
        stylize_video(clip, tmp_path / "out.mp4", style, start=0.3, end=0.2)
    monkeypatch.setattr(video_mod, "MAX_PIXELS", 64 * 48 - 1)
    with pytest.raises(AnimeGANError, match="too large"):
        stylize_video(clip, tmp_path / "out.mp4", style)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))) == []


def test_a_file_cut_short_gives_what_decodes_with_a_warning(style: str, tmp_path: Path) -> None:
    """A download cut off mid-way: its header promises 30 frames; the decodable ones are kept, and said so."""
    whole = tmp_path / "whole.avi"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi",
                    "-i", "sine=frequency=440", "-t", "3", "-c:v", "mjpeg", "-c:a", "pcm_s16le", str(whole)],
                   check=True)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[:60_000])
    result = stylize_video(cut, tmp_path / "out.mp4", style)
    assert 0 < result.frames < 30 and probe_video(result.path).has_audio
    assert any(f"after {result.frames} of 30 frames" in w for w in result.warnings), result.warnings
    assert probe_video(result.path).duration == pytest.approx(result.frames / 10, abs=0.11)


# ----------------------------------------------------------------------------------------
# Cancel and failure leave nothing behind
# ----------------------------------------------------------------------------------------
def test_cancel_and_failure_leave_nothing_behind(style: str, tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=1.0, size=(64, 48))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "anime.mp4"
    target.write_bytes(b"an older result")
    stop = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        stop.set()  # cancel after the first batch

    with pytest.raises(VideoCancelled):
        stylize_video(src, target, style, progress=progress, cancel=stop, batch_size=2)
    assert seen == [2]
    assert sorted(p.name for p in out_dir.iterdir()) == ["anime.mp4"]  # no temp, log or half file
    assert target.read_bytes() == b"an older result"

    def broken(done: int, total: int) -> None:
        raise RuntimeError("a failing progress callback")

    with pytest.raises(RuntimeError):
        stylize_video(src, out_dir / "other.gif", style, progress=broken)
    with pytest.raises(VideoCancelled):
        stylize_video(src, out_dir / "third.mp4", style, cancel=lambda: True)
    assert sorted(p.name for p in out_dir.iterdir()) == ["anime.mp4"]
    assert not [t for t in threading.enumerate() if t.name.startswith("video-")]


# ----------------------------------------------------------------------------------------
# Memory stays flat in the clip's length
# ----------------------------------------------------------------------------------------
_MEASURE = """
import json, resource, sys
from animegan.video import stylize_video
peaks = []
for src, out in zip(sys.argv[1::2], sys.argv[2::2]):
    r = stylize_video(src, out, "test-style", max_side=48, keep_size=True, batch_size=4)
    peaks.append({"frames": r.frames, "queued": r.peak_queued,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
print(json.dumps(peaks))
"""


def test_memory_stays_flat_as_the_clip_gets_longer(style: str, tmp_path: Path) -> None:
    """Peak RSS after a 1.5 s and then a 6 s 640x480 clip, in one fresh process (network at 48 px,
    output back at 640x480). Holding the decoded frames of the 45 extra frames would add ~40 MB
    (and as much again for the results); a streaming pipeline adds a few MB at most.
    """
    args = []
    for seconds in (1.5, 6):
        src = make_clip(tmp_path / f"in{seconds}.mp4", seconds=seconds, size=(640, 480), audio=False,
                        preset="ultrafast")
        args += [str(src), str(tmp_path / f"out{seconds}.mp4")]
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    short, long = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (short["frames"], long["frames"]) == (15, 60)
    assert long["queued"] <= 4 * 4  # the two queues, 2 batches deep each
    assert long["rss_mb"] - short["rss_mb"] < 20.0, (short, long)


# ----------------------------------------------------------------------------------------
# The Video tab's handler
# ----------------------------------------------------------------------------------------
def test_video_tab_handler_returns_a_playable_result_and_plain_errors(style: str, tmp_path: Path) -> None:
    import gradio as gr

    from animegan.ui import video as tab

    src = make_clip(tmp_path / "in.mp4", seconds=0.5, size=(64, 48))
    shown, download = tab.run_video(str(src), style, False, False, 0, None, None, None)
    assert shown == download and Path(download).suffix == ".mp4"
    info = probe_video(download)
    assert (info.width, info.height, info.has_audio) == (64, 48, True)
    assert not tab._CANCEL  # the run's cancel flag is gone once it ends
    Path(download).unlink()
    notes = tmp_path / "notes.mp4"
    notes.write_text("hello")
    with pytest.raises(gr.Error, match="not a video"):
        tab.run_video(str(notes), style, False, False, 0, None, None, None)


def test_video_tab_cancel_button_stops_that_sessions_run(style: str, tmp_path: Path) -> None:
    import time

    import gradio as gr

    from animegan.ui import video as tab

    src = make_clip(tmp_path / "in.mp4", seconds=3.0, size=(64, 48), audio=False)
    outcome: list[BaseException | tuple] = []

    def start() -> None:
        try:
            outcome.append(tab.run_video(str(src), style, False, False, 0, None, None, None))
        except BaseException as exc:  # handed back to the test thread
            outcome.append(exc)

    before = set(tab.output_dir().iterdir())
    worker = threading.Thread(target=start)
    worker.start()
    deadline = time.monotonic() + 30
    while not tab._CANCEL and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    tab.cancel_video(None)  # what the Cancel button calls (request=None -> the default session)
    worker.join(60)
    assert isinstance(outcome[0], gr.Error) and "cancelled" in str(outcome[0])
    assert set(tab.output_dir().iterdir()) == before  # nothing half-written offered for download


def test_cli_end_to_end(style: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m animegan video IN -o OUT --style NAME``: a playable file, the source's frames; errors in one line."""
    from animegan.cli import main

    src = make_clip(tmp_path / "in.mp4", seconds=1.0, size=(64, 48))
    out = tmp_path / "nested" / "out.mp4"
    assert main(["video", str(src), "-o", str(out), "--style", style, "--batch", "3"]) == 0
    info, source = probe_video(out), probe_video(src)
    assert (info.width, info.height) == (64, 48) and info.has_audio
    assert info.fps == pytest.approx(source.fps) and info.duration == pytest.approx(source.duration, abs=0.06)
    assert mad(ffmpeg_frames(out, (64, 48)), ffmpeg_frames(src, (64, 48))) > 20.0  # really stylized
    capsys.readouterr()
    small = tmp_path / "small.mp4"
    assert main(["video", str(src), "-o", str(small), "--style", style, "--work-side", "32"]) == 0
    assert "64x48 (stylized at 32x24" in capsys.readouterr().out and probe_video(small).width == 64
    assert main(["video", str(src), "-o", str(small), "--style", style, "--work-side", "8"]) == 2
    assert "working side 8 is too small" in capsys.readouterr().err
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    assert main(["video", str(bad), "-o", str(tmp_path / "bad_out.mp4"), "--style", style]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a video" in err and len(err.splitlines()) == 1 and not (tmp_path / "bad_out.mp4").exists()
    # An output folder that is a file, a device this machine does not have: one line, exit 2, nothing written
    (tmp_path / "afile").write_text("x")
    for extra in (["-o", str(tmp_path / "afile" / "out.mp4")],
                  ["-o", str(tmp_path / "dev.mp4"), "--device", "bogus"],
                  ["-o", str(tmp_path / "dev.mp4"), "--device", "mps"]):
        capsys.readouterr()
        assert main(["video", str(src), "--style", style, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "dev.mp4").exists()


def test_ffmpeg_named_by_the_environment_is_used_without_imageio_ffmpeg(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    copy = tmp_path / "my-ffmpeg"
    copy.symlink_to(FFMPEG)
    real_import = builtins.__import__

    def no_imageio_ffmpeg(name, *args, **kwargs):  # a machine where the package is not installed
        if name == "imageio_ffmpeg":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_imageio_ffmpeg)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(copy))
    assert video_mod.ffmpeg_exe() == str(copy)
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.3, audio=False)
    assert video_mod.probe_video(clip).width == 96
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "missing"))
    with pytest.raises(AnimeGANError, match="no ffmpeg found"):
        video_mod.ffmpeg_exe()
