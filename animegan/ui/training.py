"""The Training tab: check a dataset, start / stop / resume a local trainer, watch it live, use its weights.

Everything here reads the run folder through ``animegan.training``; the trainer is a separate
process, so a slow or crashing run never blocks or breaks the page.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from .. import hub
from ..images import open_image
from ..training import KIND_LABELS, TRAINING_OFF_MESSAGE, TrainSettings, get_manager, inspect_dataset, training_enabled
from .common import served_image, user_errors

CURRENT = "@current"  # the dropdown's "whatever is training (or was last)" entry; never a run name
REFRESH_S = 2.0
SAMPLE_MIN_SIDE = 384
# A style run starts as the shipped styles' CPU recipe (train/recipes/scenery-ghibli.json): 128 px, half width.
DEFAULTS = {"faces": {"size": 64, "batch": 64, "steps": 10000},
            "style": {"size": 128, "batch": 4, "steps": 20000, "width": 0.5}}


def _run_choices() -> list[tuple[str, str]]:
    return [("current run (live)", CURRENT)] + [(n, n) for n in get_manager().runs()]


def _chosen(view: str | None) -> str | None:
    return get_manager().current() if not view or view == CURRENT else view


def _optional(value: Any) -> int | None:
    return None if value in (None, "", 0) else int(value)


@user_errors
def check_dataset(kind: str, data: str, progress: gr.Progress = gr.Progress()) -> str:
    """Open every image of the dataset: counts, sizes, unreadable files."""
    progress(0, desc="listing images")
    report = inspect_dataset(kind, data, progress=lambda done, total: progress(done / total, desc="opening images"))
    if report.bad:
        gr.Warning(f"{len(report.bad)} unreadable image(s); the trainer will skip them")
    lines = report.summary().splitlines()
    return "\n".join(f"- {line}" for line in lines)


@user_errors
def start_run(kind: str, data: str, name: str, steps: Any, size: Any, batch: Any, preset: str, recipe: str,
              width: Any, sample_every: Any, checkpoint_every: Any, fid_every: Any, eval_every: Any,
              eval_photos: str | None) -> tuple[str, Any]:
    style = kind == "style"
    settings = TrainSettings(steps=int(steps or 0), size=_optional(size), batch=_optional(batch),
                             preset=preset if style else None, recipe=recipe if style else None,
                             width=width if style and width not in (None, "") else None,
                             sample_every=_optional(sample_every), checkpoint_every=_optional(checkpoint_every),
                             fid_every=_optional(fid_every) if kind == "faces" else None,
                             eval_every=_optional(eval_every) if style else None,
                             eval_photos=eval_photos if style else None)
    status = get_manager().start(kind, data, name, settings)
    gr.Info(f"started {status.name}: the curves and samples appear as it trains")
    return status.summary(), gr.update(choices=_run_choices(), value=CURRENT)


@user_errors
def stop_run() -> str:
    return get_manager().stop(wait=False).summary()


@user_errors
def resume_run(view: str | None, steps: Any) -> tuple[str, Any]:
    name = _chosen(view)
    if not name:
        raise gr.Error("no run to resume: pick one in 'Runs'", print_exception=False)
    status = get_manager().resume(name, int(steps) if steps else None)
    gr.Info(f"resumed {status.name}")
    return status.summary(), gr.update(choices=_run_choices(), value=CURRENT)


@user_errors
def pick_run(view: str | None) -> Any:
    """A run chosen from the list: its total steps go in the Steps box (what Resume continues to)."""
    name = _chosen(view)
    if not name:
        return gr.skip()
    total = get_manager().status(name).total
    return gr.update(value=total) if total else gr.skip()


@user_errors
def export_weights(view: str | None, weights_name: str, overwrite: bool) -> str:
    name = _chosen(view)
    if not name:
        raise gr.Error("no run to take weights from: pick one in 'Runs'", print_exception=False)
    path = get_manager().export(name, weights_name, overwrite=bool(overwrite))
    gr.Info(f"saved {path.name}")
    kind = get_manager().status(name).kind
    where = ("the Faces tab (press ↻ there, or reload the page)" if kind in ("faces", "upscaler")
             else "the Photo and Video style menus (reload the page)")
    return f"Saved **{path.stem}** to `{path}`: pick it in {where}."


def hub_hint() -> str:
    """What the share box says; evaluated on each page load, so a token set later shows up."""
    if hub.token_available():
        return "A Hugging Face token is set: the run's newest weights go up with a model card and a sample grid."
    return ("Set `HF_TOKEN` (a token with write access) or run `hf auth login`, then reload the page, "
            "to share a run's weights on the Hub.")


@user_errors
def push_run(view: str | None, repo: str, private: bool, progress: gr.Progress = gr.Progress()) -> str:
    """Upload the viewed run's newest weights to a Hub model repo (exported first, model card made)."""
    name = _chosen(view)
    if not name:
        raise gr.Error("no run to share: pick one in 'Runs'", print_exception=False)
    url = hub.push_weights(get_manager().path(name), repo, private=bool(private), name=name,
                           progress=lambda done, what: progress(done, desc=what))
    gr.Info(f"uploaded to {url}")
    return f"Shared at {url}: anyone can use it as `hub:{hub.parse_repo_id(repo)}`."


def refresh(view: str | None, seen: dict[str, Any] | None) -> tuple[Any, ...]:
    """Timer tick: status, curves, newest samples and log of the viewed run; unchanged parts are skipped."""
    seen = dict(seen or {})
    manager = get_manager()
    try:
        name = _chosen(view)
        status = manager.status(name)
    except Exception as exc:  # a broken run folder must not stop the timer
        return (f"cannot read the run: {exc}", gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), seen)
    runs = tuple(manager.runs())
    runs_update = gr.skip()
    if runs != seen.get("runs"):
        seen["runs"] = runs
        runs_update = gr.update(choices=_run_choices())
    plot_key = (status.name, status.records)
    plot_update = quality_update = gr.skip()
    if plot_key != seen.get("plot"):
        seen["plot"] = plot_key
        frame = manager.metrics_frame(status.name) if status.name else None
        plot_update = frame if frame is not None and len(frame) else None
        quality = manager.quality_frame(status.name) if status.name else None
        shown = quality is not None and len(quality) > 0
        # Evaluations are rarer than loss lines: redrawn only when a point was added (or the run changed).
        quality_key = (status.name, len(quality) if shown else 0, int(quality["step"].max()) if shown else 0)
        if quality_key != seen.get("quality"):
            seen["quality"] = quality_key
            quality_update = gr.update(value=quality if shown else None, visible=shown)
    sample_key = (status.name, str(status.sample))
    sample_update = gr.skip()
    if sample_key != seen.get("sample"):
        seen["sample"] = sample_key
        sample_update = _load(status.sample)
    return status.summary(), plot_update, quality_update, sample_update, status.log_tail, runs_update, seen


def _load(path: Any) -> Any:
    if path is None:
        return None
    try:  # a copy in the outputs folder, so a runs folder outside Gradio's allowed paths is still shown
        image = open_image(path).convert("RGB")
        if max(image.size) < SAMPLE_MIN_SIDE:  # small faces: enlarge with visible pixels, not blur
            scale = -(-SAMPLE_MIN_SIDE // max(image.size))
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        return served_image(image, "sample")
    except Exception:
        return gr.skip()  # half-written or pruned: the next tick tries again


def switch_kind(kind: str) -> tuple[Any, ...]:
    d = DEFAULTS.get(kind, DEFAULTS["faces"])
    style = kind == "style"
    data_label = ("Dataset folder (holds real_images/ and anime_images/)" if style
                  else "Dataset folder (face images, searched recursively)")
    return (gr.update(label=data_label), gr.update(value=d["size"]), gr.update(value=d["batch"]),
            gr.update(value=d["steps"]), gr.update(visible=style), gr.update(visible=not style),
            gr.update(visible=style))


def build_tab() -> None:
    """Training tab components and events (only a note where training is off, as on a public Space)."""
    if not training_enabled():
        gr.Markdown(TRAINING_OFF_MESSAGE, elem_id="train-off")
        return
    gr.Markdown("Train your own anime faces or photo-to-anime style on this machine. One run trains at a time; "
                "it keeps going if you close the page. Runs are saved in the runs folder "
                "(`./runs`, or `$ANIMEGAN_RUNS_DIR`).")
    with gr.Row():
        kind = gr.Radio([(KIND_LABELS["faces"].capitalize(), "faces"), ("Photo → anime style", "style")],
                        value="faces", label="What to train", elem_id="train-kind")
    with gr.Row():
        data = gr.Textbox(label="Dataset folder (face images, searched recursively)", scale=4,
                          placeholder="/path/to/dataset", elem_id="train-data")
        check = gr.Button("Check", scale=0, min_width=100, elem_id="train-check")
    check_result = gr.Markdown(elem_id="train-check-result")
    with gr.Row():
        name = gr.Textbox(label="Run name", placeholder="e.g. faces-64", elem_id="train-name")
        steps = gr.Number(value=DEFAULTS["faces"]["steps"], precision=0, minimum=1, label="Steps (total)",
                          elem_id="train-steps")
        size = gr.Number(value=DEFAULTS["faces"]["size"], precision=0, minimum=16, label="Image size",
                         elem_id="train-size")
        batch = gr.Number(value=DEFAULTS["faces"]["batch"], precision=0, minimum=1, label="Batch",
                          elem_id="train-batch")
    with gr.Row(visible=False) as style_row:
        preset = gr.Radio(["scenery", "portrait"], value="scenery", label="Preset", elem_id="train-preset")
        recipe = gr.Radio(["v2", "v3"], value="v2", label="Recipe", elem_id="train-recipe")
        width = gr.Number(value=DEFAULTS["style"]["width"], minimum=0.1, maximum=2, step=0.05,
                          label="Generator width (1: the published network; the shipped styles use 0.5)",
                          elem_id="train-width")
    with gr.Accordion("More settings", open=False, elem_id="train-more"):
        with gr.Row():
            sample_every = gr.Number(value=0, precision=0, minimum=0, label="Sample grid every N steps (0: auto)",
                                     elem_id="train-sample-every")
            checkpoint_every = gr.Number(value=0, precision=0, minimum=0,
                                         label="Checkpoint every N steps (0: auto)", elem_id="train-ckpt-every")
            with gr.Column(visible=True) as faces_col:
                fid_every = gr.Number(value=0, precision=0, minimum=0, label="FID every N steps (0: never)",
                                      elem_id="train-fid-every")
            with gr.Column(visible=False) as style_col:
                eval_every = gr.Number(value=0, precision=0, minimum=0, label="Evaluate every N steps (0: never)",
                                       elem_id="train-eval-every")
                eval_photos = gr.Textbox(label="Held-out photos folder (never trained on)",
                                         placeholder="/path/to/held_out_photos", elem_id="train-eval-photos")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
        resume = gr.Button("Resume", elem_id="train-resume")
    with gr.Row():
        runs = gr.Dropdown(_run_choices(), value=CURRENT, label="Runs", scale=4, elem_id="train-runs")
    status = gr.Markdown("no run yet", elem_id="train-status")
    with gr.Row():
        plot = gr.LinePlot(None, x="step", y="value", color="series", title="Losses", x_title="step",
                           y_title="loss", height=320, elem_id="train-plot")
        quality = gr.LinePlot(None, x="step", y="value", color="series", title="Quality",
                              x_title="step", y_title="FID, KID x1000, content", height=320, visible=False,
                              elem_id="train-quality")
        sample = gr.Image(label="Newest sample grid", type="pil", format="png", height=320, interactive=False,
                          elem_id="train-sample")
    log = gr.Textbox(label="Trainer log (last lines)", lines=6, max_lines=12, interactive=False, elem_id="train-log")
    with gr.Row():
        weights_name = gr.Textbox(label="Weights name", placeholder="e.g. my-faces", scale=3,
                                  elem_id="train-export-name")
        overwrite = gr.Checkbox(label="Replace weights of that name", value=False, elem_id="train-export-overwrite")
        export = gr.Button("Use these weights", elem_id="train-export")
    export_result = gr.Markdown(elem_id="train-export-result")
    with gr.Accordion("Share on the Hugging Face Hub", open=False, elem_id="train-hub"):
        gr.Markdown(hub_hint, elem_id="train-hub-hint")
        with gr.Row():
            repo = gr.Textbox(label="Model repository", placeholder="USER/NAME", scale=3, elem_id="train-hub-repo")
            private = gr.Checkbox(label="Private", value=False, elem_id="train-hub-private")
            push = gr.Button("Push to the Hub", elem_id="train-hub-push")
        push_result = gr.Markdown(elem_id="train-hub-result")
    seen = gr.State({})
    timer = gr.Timer(REFRESH_S)

    kind.change(switch_kind, kind, [data, size, batch, steps, style_row, faces_col, style_col], queue=False,
                api_visibility="undocumented")
    check.click(check_dataset, [kind, data], check_result, concurrency_id="training-check")
    start.click(start_run, [kind, data, name, steps, size, batch, preset, recipe, width, sample_every, checkpoint_every,
                            fid_every, eval_every, eval_photos], [status, runs], concurrency_limit=None)
    stop.click(stop_run, None, status, concurrency_limit=None)
    resume.click(resume_run, [runs, steps], [status, runs], concurrency_limit=None)
    runs.input(pick_run, runs, steps, concurrency_limit=None)
    export.click(export_weights, [runs, weights_name, overwrite], export_result, concurrency_id="training-export")
    push.click(push_run, [runs, repo, private], push_result, concurrency_id="training-export")
    # Reading the run folder is cheap and must not wait behind a stylization in the model queue.
    timer.tick(refresh, [runs, seen], [status, plot, quality, sample, log, runs, seen], concurrency_limit=None,
               show_progress="hidden", api_visibility="undocumented")
