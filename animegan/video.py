"""Video to anime: frames in, frames out, sound kept.

The pipeline streams: a decoder thread reads frames with OpenCV into a bounded queue, the
calling thread stylizes them in batches through ``Stylizer.run_arrays``, and an encoder
thread pipes the results into the ffmpeg that imageio-ffmpeg bundles (H.264, yuv420p,
faststart). At most a few batches are in memory at once, whatever the video's length.
A second ffmpeg pass copies the video and muxes the source's audio back (trimmed to the
same span). Everything is written to a temporary file beside the output and moved into
place only when complete.

Orientation: phones store a display rotation instead of rotating pixels. OpenCV's own
auto-rotation is switched off and the frames are turned once here, by the rotation ffmpeg
reports, so the result is upright exactly once and carries no rotation tag.

Variable frame rate: such videos are accepted with a warning; their frames are kept one for
one and written at the average rate (frames / duration), so the length and the audio's end
stay in step while the pacing inside the clip is evened out.
"""
from __future__ import annotations

import math
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .colors import match_colors
from .errors import AnimeGANError
from .fileio import atomic_path
from .limits import check_time
from .portrait import largest_face, portrait_box
from .stylize import PORTRAIT_SIDE, Stylizer, get_stylizer

MAX_PIXELS = 7680 * 4320  # 8K UHD: above this even decoding a frame is a memory hazard
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".gif")
PORTRAIT_SCAN_FRAMES = 48  # frames looked at (from the start of the span) to place the portrait crop
PORTRAIT_SCAN_STEP = 4
CRF = 18  # x264 quality: visually lossless for cartoons, modest files
PROBE_TIMEOUT_S = 60

ProgressFn = Callable[[int, int], None]


class VideoCancelled(AnimeGANError):
    """The run was cancelled; nothing was written under the output name."""


@dataclass
class VideoInfo:
    """What a probe of a video file found. Sizes are upright (after rotation)."""

    path: str
    width: int
    height: int
    fps: float
    duration: float
    rotation: int  # counter-clockwise degrees to turn the stored frames: 0, 90, 180 or 270
    has_audio: bool
    variable_fps: bool
    codec: str


@dataclass
class VideoResult:
    """What ``stylize_video`` wrote."""

    path: Path
    frames: int
    fps: float
    seconds: float
    had_audio: bool
    width: int = 0
    height: int = 0
    warnings: list[str] = field(default_factory=list)
    peak_queued: int = 0  # most frames waiting in the pipeline's queues at any time
    model_seconds: float = 0.0  # time in the network
    model_wait_seconds: float = 0.0  # time the network's thread waited on decoding or encoding
    work_width: int = 0  # what the network saw: the style's working size, or the output's
    work_height: int = 0


# ----------------------------------------------------------------------------------------
# Probing
# ----------------------------------------------------------------------------------------
def ffmpeg_exe() -> str:
    """``IMAGEIO_FFMPEG_EXE`` when it names a file, else the ffmpeg binary imageio-ffmpeg bundles."""
    chosen = os.environ.get("IMAGEIO_FFMPEG_EXE")
    if chosen and Path(chosen).is_file():  # usable even where imageio-ffmpeg is not installed
        return chosen
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # imageio-ffmpeg raises RuntimeError when no binary is found
        raise AnimeGANError(f"no ffmpeg found for video work ({exc}); reinstall imageio-ffmpeg") from None


_IMAGE_FORMATS = ("image2", "_pipe")  # ffmpeg demuxers of still images (jpeg_pipe, png_pipe ...)
# The only demuxers ffmpeg may use on an input: the containers videos come in, and the image ones
# (so a photo gets the "still image" message). Playlists and concat lists (hls, concat, ...) are
# left out: they make ffmpeg open the other files or URLs they name.
VIDEO_DEMUXERS = ("mov,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,gif,h264,hevc,m4v,ivf,mxf,dv,"
                  "image2,png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,tiff_pipe")


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Probe a video with ffmpeg (no decoding): size, rate, length, rotation, audio."""
    path = Path(path)
    if not path.exists():
        raise AnimeGANError(f"{path}: no such file")
    if path.is_dir():
        raise AnimeGANError(f"{path}: is a folder, not a video")
    if not path.is_file():  # a FIFO or a device: ffmpeg would wait on it
        raise AnimeGANError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise AnimeGANError(f"{path}: empty file")
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-format_whitelist", VIDEO_DEMUXERS,
                               "-i", str(path)],
                              capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a header probe never needs this long: the file is hostile or stalled
        raise AnimeGANError(f"{path}: reading the video's header took over {PROBE_TIMEOUT_S} s; "
                            "not a usable video") from None
    text = proc.stderr
    fmt = re.search(r"Input #0, ([^ ]+), from", text)
    if fmt is None:
        raise AnimeGANError(f"{path}: not a video file (ffmpeg cannot read it)")
    streams = re.findall(r"^\s*Stream #0:\d+[^:]*: (Video|Audio|Subtitle|Data|Attachment): (.*)$", text, re.M)
    video = [(i, s) for i, (kind, s) in enumerate(streams) if kind == "Video" and "attached pic" not in s]
    has_audio = any(kind == "Audio" for kind, _ in streams)
    if not video:
        what = "an audio-only file" if has_audio else "a file without a video stream"
        raise AnimeGANError(f"{path}: {what}, not a video")
    if any(f in fmt.group(1) for f in _IMAGE_FORMATS):
        raise AnimeGANError(f"{path}: a still image, not a video (use 'python -m animegan stylize' for photos)")
    line = video[0][1]
    codec = line.split(",")[0].split()[0] if line.strip() else "unknown"
    if codec == "none":  # ffmpeg names no decoder: say so now, before OpenCV fails less clearly
        tag = re.search(r"none \(([^ /)]+)", line)
        named = f" ({tag.group(1)!r})" if tag else ""
        raise AnimeGANError(f"{path}: its video codec{named} is unknown to this ffmpeg build; "
                            "convert the file (for example to H.264 MP4) first")
    size = re.search(r"[ ,](\d{1,6})x(\d{1,6})[ ,\[]", line + " ")
    if size is None:
        raise AnimeGANError(f"{path}: video stream without a frame size (codec {codec})")
    coded_w, coded_h = int(size.group(1)), int(size.group(2))
    fps = _number(re.search(r"([\d.]+)(k?) fps", line))
    tbr = _number(re.search(r"([\d.]+)(k?) tbr", line))
    duration = 0.0
    dur = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    if dur:
        duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))
    rotation = _rotation(text, video[0][0])
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    variable = bool(fps and tbr and abs(fps - tbr) > 0.02 * max(fps, tbr))
    return VideoInfo(str(path), width, height, fps or tbr or 0.0, duration, rotation, has_audio, variable, codec)


def _number(match: re.Match[str] | None) -> float:
    if match is None:
        return 0.0
    return float(match.group(1)) * (1000.0 if match.group(2) else 1.0)


def _rotation(text: str, video_index: int) -> int:
    """Counter-clockwise degrees from the first video stream's display matrix (or old rotate tag)."""
    blocks = re.split(r"^\s*Stream #0:", text, flags=re.M)[1:]
    block = blocks[video_index] if video_index < len(blocks) else ""
    m = re.search(r"rotation of (-?[\d.]+) degrees", block)
    if m:
        return int(round(float(m.group(1)))) % 360 // 90 * 90
    m = re.search(r"^\s*rotate\s*:\s*(-?\d+)", block, re.M)
    if m:  # the legacy tag counts clockwise
        return (-int(m.group(1))) % 360 // 90 * 90
    return 0


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------
_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


class FrameReader:
    """Upright RGB frames of one video, from ``first`` to ``stop`` (exclusive), one at a time."""

    def __init__(self, info: VideoInfo) -> None:
        self.info = info
        cap = cv2.VideoCapture(info.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise AnimeGANError(f"{info.path}: cannot decode its video (codec {info.codec} is not supported here)")
        # Turn the frames ourselves, once: OpenCV's own auto-rotation is switched off where it can be.
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        self.opencv_rotates = bool(cap.get(cv2.CAP_PROP_ORIENTATION_AUTO))
        self.cap = cap
        self.frame_count = max(0, int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames(self, first: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        cap = self.cap
        if first > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
            pos = int(round(cap.get(cv2.CAP_PROP_POS_FRAMES)))
            if pos != first:  # an inexact seek: start over and step to the frame
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                for _ in range(first):
                    if not cap.grab():
                        return
        index = first
        while stop is None or index < stop:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return
            yield self._upright(bgr)
            index += 1

    def _upright(self, bgr: np.ndarray) -> np.ndarray:
        rot = self.info.rotation
        if rot and not self.opencv_rotates:
            h, w = bgr.shape[:2]
            # Guard against a build that rotated anyway: a quarter turn already applied shows in the shape.
            if not (rot in (90, 270) and (w, h) == (self.info.width, self.info.height) and w != h):
                bgr = cv2.rotate(bgr, _ROTATE[rot])
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


# ----------------------------------------------------------------------------------------
# Geometry: crop, working size, output size
# ----------------------------------------------------------------------------------------
@dataclass
class _Plan:
    crop: tuple[int, int, int, int] | None  # (left, top, right, bottom) in the upright frame
    base: tuple[int, int]  # (w, h) the frame (or crop) is brought to before any cap
    work: tuple[int, int]  # what the network sees
    out: tuple[int, int]  # what is written (even sides)


def _even(n: int) -> int:
    return max(2, n - n % 2)


def _fit(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    w, h = size
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    return w, h


def plan_geometry(width: int, height: int, crop: tuple[int, int, int, int] | None,
                  max_side: int | None, keep_size: bool, work_side: int = 0) -> _Plan:
    """Sizes for one run. ``max_side`` caps the output's long side; with ``keep_size`` it caps
    only what the network sees and the result is scaled back to the source (or portrait) size.
    ``work_side`` (0: none) caps the network's input further, never the output."""
    base = (PORTRAIT_SIDE, PORTRAIT_SIDE) if crop else (width, height)
    capped = _fit(base, max_side)
    out = (_even(base[0]), _even(base[1])) if keep_size else (_even(capped[0]), _even(capped[1]))
    seen = _fit(capped, work_side)
    return _Plan(crop, base, (_even(seen[0]), _even(seen[1])), out)


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = rgb.shape[:2]
    if (w, h) == size:
        return rgb
    if size[0] <= w and size[1] <= h and (w - size[0]) <= 1 and (h - size[1]) <= 1:
        return rgb[:size[1], :size[0]]  # an odd side made even: drop one row or column, no resampling
    shrink = size[0] < w or size[1] < h
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)


def find_portrait_box(reader_info: VideoInfo, first: int, stop: int | None) -> tuple[int, int, int, int] | None:
    """One square crop for the whole clip: the median face box over the first frames with a face.

    A fixed box (rather than one per frame) keeps the picture from jittering.
    """
    reader = FrameReader(reader_info)
    boxes = []
    try:
        end = first + PORTRAIT_SCAN_FRAMES if stop is None else min(stop, first + PORTRAIT_SCAN_FRAMES)
        for i, rgb in enumerate(reader.frames(first, end)):
            if i % PORTRAIT_SCAN_STEP:
                continue
            face = largest_face(rgb)
            if face is not None:
                boxes.append(face)
    finally:
        reader.close()
    if not boxes:
        return None
    x, y, w, h = (int(round(v)) for v in np.median(np.array(boxes, dtype=np.float64), axis=0))
    return portrait_box((reader_info.width, reader_info.height), (x, y, w, h))


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------
def _rate(fps: float) -> str:
    """A frame rate as the exact fraction ffmpeg wants (29.97 -> 30000/1001)."""
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


class _Encoder:
    """An ffmpeg process taking raw RGB frames on stdin and writing H.264 yuv420p MP4."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float) -> None:
        self.path = path
        self._log = open(path.with_name(path.name + ".log"), "w+b")
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-r", _rate(fps), "-i", "-",
               "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(CRF), "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def write(self, rgb: np.ndarray) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        except (BrokenPipeError, OSError):
            raise AnimeGANError(f"video encoder stopped: {self._tail()}") from None

    def finish(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.wait() != 0:
            raise AnimeGANError(f"video encoder failed: {self._tail()}")
        self._cleanup()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def abort(self) -> None:
        self.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self._cleanup()

    def _tail(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:200] if lines else "no message"

    def _cleanup(self) -> None:
        if not self._log.closed:
            self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def _ffmpeg(args: list[str], what: str) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1][:200]
        raise AnimeGANError(f"{what} failed: {last}")


def _mux_audio(video: Path, source: str, start: float, seconds: float, out: Path) -> None:
    """Copy the new video stream and add the source's first audio track over the same span."""
    _ffmpeg(["-i", str(video), "-ss", f"{start:.6f}", "-t", f"{seconds:.6f}", "-i", source,
             "-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k",
             "-map_metadata", "-1", "-movflags", "+faststart", str(out)], "adding the sound back")


def _to_gif(video: Path, out: Path) -> None:
    """Two streaming passes (palette, then dithering) so a long clip never sits in memory."""
    palette = out.with_name(out.name + ".palette.png")
    try:
        _ffmpeg(["-i", str(video), "-vf", "palettegen=stats_mode=full", "-update", "1", str(palette)],
                "making the GIF palette")
        _ffmpeg(["-i", str(video), "-i", str(palette), "-lavfi", "paletteuse=dither=sierra2_4a",
                 "-f", "gif", str(out)], "writing the GIF")
    finally:
        palette.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------
_END = object()


def _is_cancelled(cancel: object) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())  # type: ignore[operator]


class _Pipe:
    """Bounded queues shared by the three stages, with a stop flag so no stage blocks forever."""

    def __init__(self, depth: int) -> None:
        self.decoded: queue.Queue = queue.Queue(maxsize=depth)
        self.styled: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.peak = 0
        self.model_s = 0.0
        self.wait_s = 0.0

    def put(self, q: queue.Queue, item: object) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                self.peak = max(self.peak, self.decoded.qsize() + self.styled.qsize())
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue) -> object:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop.set()


def _decode_stage(pipe: _Pipe, reader: FrameReader, first: int, stop: int | None, plan: _Plan,
                  need_reference: bool) -> None:
    try:
        for rgb in reader.frames(first, stop):
            if plan.crop:
                left, top, right, bottom = plan.crop
                rgb = rgb[top:bottom, left:right]
            work = _resize(rgb, plan.work)
            # The colour reference is the source at output size; it is the work frame unless sizes differ.
            ref = _resize(rgb, plan.out) if need_reference and plan.out != plan.work else None
            if not pipe.put(pipe.decoded, (work, ref)):
                return
        pipe.put(pipe.decoded, _END)
    except BaseException as exc:  # handed to the main thread, which raises it
        pipe.fail(exc)


def _encode_stage(pipe: _Pipe, encoder: _Encoder, plan: _Plan, keep_colors: bool) -> None:
    # Scaling to the output size and colour matching happen here, off the model's thread.
    try:
        while True:
            item = pipe.get(pipe.styled)
            if item is _END:
                return
            out, work, ref = item  # type: ignore[misc]
            out = _resize(out, plan.out)
            if keep_colors:
                out = match_colors(out, ref if ref is not None else work)
            encoder.write(out)
    except BaseException as exc:
        pipe.fail(exc)


def stylize_video(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], style: str | None = None, *,
                  portrait: bool = False, keep_colors: bool = False, max_side: int | None = None,
                  start: float | None = None, end: float | None = None, batch_size: int = 4,
                  progress: ProgressFn | None = None, cancel: "threading.Event | Callable[[], bool] | None" = None,
                  device: str | None = None, half: bool | None = None, keep_size: bool = False,
                  stylizer: Stylizer | None = None, compile_mode: str | None = None,
                  work_side: int | None = None) -> VideoResult:
    """Stylize a video file into ``output_path`` (.mp4/.m4v/.mov/.mkv: H.264 with the source's
    sound; .gif: silent GIF) at the source's frame rate and frame count, upright.

    ``max_side`` caps the output's long side (``keep_size=True`` caps only the network's input
    and scales the result back to the source size). The network sees frames at most ``work_side``
    on their long side, as a photo would be (None: the style's working size, its metadata's
    ``max_side``, if it records one; 0: no cap beyond ``max_side``), and the result is scaled up
    to the output's size.
    ``start``/``end`` trim, in seconds.
    ``progress(done, total)`` is called after each batch; ``cancel`` (an Event or a callable)
    is checked between batches and stops the run with ``VideoCancelled``, leaving no output.
    ``compile_mode`` runs the network through ``torch.compile`` (see ``Stylizer``): its first
    batch waits for the compiler (under a minute on a small CPU), the rest run faster.
    ``half=False`` runs the network in float32 where the policy would use bfloat16 or float16.
    """
    source, out_path = Path(input_path), Path(output_path)
    suffix = out_path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise AnimeGANError(f"{out_path}: unsupported output type {out_path.suffix or '(none)'!r} "
                            f"(use {', '.join(OUTPUT_SUFFIXES)})")
    if source.exists() and out_path.exists() and source.resolve() == out_path.resolve():
        raise AnimeGANError(f"{out_path}: the output would overwrite the input")
    if batch_size < 1:
        raise AnimeGANError(f"batch size must be at least 1, not {batch_size}")
    for what, side in (("max side", max_side), ("working side", work_side)):
        if side and side < 16:
            raise AnimeGANError(f"{what} {side} is too small (at least 16, or 0 for no cap)")
    info = probe_video(source)
    if info.width * info.height > MAX_PIXELS:
        raise AnimeGANError(f"{source}: {info.width}x{info.height} is too large a video "
                            f"(at most {MAX_PIXELS // 1_000_000} megapixels a frame); scale it down first")
    warnings: list[str] = []
    reader = FrameReader(info)
    try:
        fps = reader.fps or info.fps
        total = reader.frame_count
        if info.variable_fps and info.duration > 0 and total > 0:
            fps = total / info.duration
            warnings.append(f"{source.name}: variable frame rate; written at its average {fps:.3f} fps "
                            "(every frame kept, same length)")
        if not fps or not math.isfinite(fps) or fps <= 0 or fps > 1000:
            raise AnimeGANError(f"{source}: unknown or unusable frame rate ({fps})")
        first, stop = _span(source, info, fps, total, start, end)
        expected = (stop if stop is not None else total) - first if total else 0
        crop = None
        if portrait:
            crop = find_portrait_box(info, first, stop)
            if crop is None:
                warnings.append(f"{source.name}: no face found at the start; the whole frame was stylized")
        model = stylizer or get_stylizer(style, device, half, compile_mode=compile_mode, portrait=portrait)
        plan = plan_geometry(info.width, info.height, crop, max_side or None, keep_size, model.work_cap(work_side))
        with atomic_path(out_path) as tmp:
            video_tmp = tmp.with_name(tmp.name + ".video.mp4")
            try:
                frames, pipe = _run_pipeline(reader, model, plan, first, stop, batch_size, keep_colors,
                                             video_tmp, fps, expected, progress, cancel)
                if model.compile_error:
                    warnings.append(model.compile_error)
                if frames == 0:
                    raise AnimeGANError(f"{source}: no frames could be decoded "
                                        f"({'empty span' if first else f'codec {info.codec} unreadable or no frames'})")
                seconds = frames / fps
                if expected and frames < expected - max(2, expected // 100):
                    warnings.append(f"{source.name}: decoding stopped after {frames} of {expected} frames "
                                    "(the file may be damaged past that point); the result is that long")
                had_audio = info.has_audio and suffix != ".gif"
                if had_audio:
                    try:
                        _mux_audio(video_tmp, str(source), first / fps, seconds, tmp)
                    except AnimeGANError as exc:  # every frame is done: keep them, without the sound
                        had_audio = False
                        warnings.append(f"{source.name}: {exc}; the result has no sound")
                if suffix == ".gif":
                    _to_gif(video_tmp, tmp)
                elif not had_audio and suffix in (".mp4", ".m4v"):
                    os.replace(video_tmp, tmp)
                elif not had_audio:  # .mov / .mkv: same stream, that container
                    _ffmpeg(["-i", str(video_tmp), "-map", "0:v:0", "-c", "copy", str(tmp)], "writing the video")
                if _is_cancelled(cancel):
                    raise VideoCancelled(f"{source.name}: cancelled; nothing written")
            finally:
                video_tmp.unlink(missing_ok=True)
    finally:
        reader.close()
    return VideoResult(out_path, frames, fps, seconds, had_audio, plan.out[0], plan.out[1], warnings,
                       peak_queued=pipe.peak, model_seconds=round(pipe.model_s, 3),
                       model_wait_seconds=round(pipe.wait_s, 3), work_width=plan.work[0], work_height=plan.work[1])


def _span(source: Path, info: VideoInfo, fps: float, total: int, start: float | None,
          end: float | None) -> tuple[int, int | None]:
    """Frame indices [first, stop) of a trim given in seconds."""
    length = info.duration or (total / fps if total else 0.0)
    start = float(start or 0.0)
    if start < 0 or (end is not None and end < 0):
        raise AnimeGANError(f"trim times must not be negative (start {start}, end {end})")
    if end is not None and end <= start:
        raise AnimeGANError(f"trim end {end} s must come after start {start} s")
    if length and start >= length:
        raise AnimeGANError(f"{source}: start {start} s is past the end of the video ({length:.2f} s)")
    first = int(round(start * fps))
    stop = None if end is None or (length and end >= length) else max(first + 1, int(round(end * fps)))
    if total and stop is not None:
        stop = min(stop, total)
    return first, stop


def _run_pipeline(reader: FrameReader, model: Stylizer, plan: _Plan, first: int, stop: int | None,
                  batch_size: int, keep_colors: bool, video_tmp: Path, fps: float, expected: int,
                  progress: ProgressFn | None, cancel: object) -> tuple[int, _Pipe]:
    """Decode -> stylize -> encode with the three stages overlapping.

    Returns the frames written and the pipe (for its queue and timing figures).
    """
    pipe = _Pipe(depth=2 * batch_size)
    encoder = _Encoder(video_tmp, plan.out, fps)
    decoder_thread = threading.Thread(target=_decode_stage, name="video-decode", daemon=True,
                                      args=(pipe, reader, first, stop, plan, keep_colors))
    encoder_thread = threading.Thread(target=_encode_stage, name="video-encode", daemon=True,
                                      args=(pipe, encoder, plan, keep_colors))
    decoder_thread.start()
    encoder_thread.start()
    done = 0
    finished = False
    try:
        ended = False
        while not ended:
            if _is_cancelled(cancel):
                raise VideoCancelled("cancelled; nothing written")
            check_time()  # a request's time limit (animegan.limits): stops between batches, nothing written
            batch: list[tuple[np.ndarray, np.ndarray | None]] = []
            waited = time.perf_counter()
            while len(batch) < batch_size:
                item = pipe.get(pipe.decoded)
                if item is _END:
                    ended = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            if pipe.errors:
                break
            if not batch:
                continue
            began = time.perf_counter()
            outs = model.run_arrays([work for work, _ in batch])
            ran = time.perf_counter()
            for out, (work, ref) in zip(outs, batch):
                if not pipe.put(pipe.styled, (out, work, ref)):
                    break
            pipe.model_s += ran - began
            pipe.wait_s += (began - waited) + (time.perf_counter() - ran)
            done += len(batch)
            if progress is not None:
                progress(done, max(expected, done))
        if not pipe.errors:
            pipe.put(pipe.styled, _END)
            encoder_thread.join()
        if pipe.errors:
            raise pipe.errors[0]
        encoder.finish()
        finished = True
        if progress is not None and done:
            progress(done, done)
        return done, pipe
    finally:
        pipe.stop.set()
        if not finished:
            encoder.kill()  # unblocks a writer stuck on a full pipe
        decoder_thread.join()
        encoder_thread.join()
        if not finished:
            encoder.abort()


__all__ = ["MAX_PIXELS", "VideoCancelled", "VideoInfo", "VideoResult", "probe_video", "stylize_video"]
