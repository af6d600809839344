"""Imports run one way: app and CLI -> ``animegan/`` -> models; ``train/`` uses the library, never the reverse.

Two checks: every import statement of the library and the app, lazy ones inside functions
included, is read from the source; and the library, its CLI, the app's UI and the run export
are used in a copy of the checkout that has no ``train/`` at all.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TRAINERS = "train"


def _is_trainer_module(name: str | None) -> bool:
    return name is not None and (name == TRAINERS or name.startswith(TRAINERS + "."))


def trainer_imports(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: statement`` for each import of the trainers in ``source`` (any depth, any form)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str | None] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            # ``from train import x`` and ``from train.faces import x``; a relative import stays in its package
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        if any(_is_trainer_module(n) for n in names):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def library_files() -> list[Path]:
    return [*sorted((REPO / "animegan").rglob("*.py")), REPO / "app.py"]


def test_the_scanner_sees_every_form_of_import() -> None:
    """The check itself: module-level, lazy, aliased and dynamic imports of the trainers are all caught."""
    caught = ["import train", "import train.faces as tf", "from train import losses",
              "from train.runs import RunFolder",
              "def f():\n    from train.faces import export\n    return export",
              "class C:\n    def m(self):\n        import train.animegan",
              "import importlib\nimportlib.import_module('train.faces')", "__import__('train')"]
    for source in caught:
        assert trainer_imports(source), source
    allowed = ["import training", "from animegan.training import get_manager", "from .training import KINDS",
               "from ..runs import RunFolder", "KINDS = {'faces': 'train.faces'}  # a process to launch, not an import",
               "import trainer_tools"]
    for source in allowed:
        assert not trainer_imports(source), source


def test_the_library_and_the_app_never_import_the_trainers() -> None:
    files = library_files()
    assert len(files) > 20 and (REPO / "animegan" / "runs.py") in files  # the scan really covers the package
    offending = [hit for path in files
                 for hit in trainer_imports(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert not offending, "the library must not import train/ (move what it needs into animegan/):\n" + "\n".join(
        offending)


# Run in the copy: the trainers are refused even where an installed copy of them could be found,
# so the check does not depend on how this checkout was installed.
DRIVER = '''
import importlib.abc, runpy, sys

class NoTrainers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "train" or name.startswith("train."):
            raise ModuleNotFoundError(f"No module named {name!r} (this install has no trainers)", name=name)
        return None

sys.meta_path.insert(0, NoTrainers())
mode, arg, *rest = sys.argv[1:]
if mode == "-m":
    sys.argv = [arg, *rest]
    runpy.run_module(arg, run_name="__main__", alter_sys=True)
else:
    exec(compile(arg, "<check>", "exec"), {"__name__": "__check__"})
'''

# Export a face run and a style run, laid out as the trainers lay them out, with the library alone.
EXPORT_CHECK = '''
import json, sys
from pathlib import Path
import animegan, app
import animegan.ui
from animegan.export import export_run
from animegan.cli.fid import _run_generator
from animegan.runs import RunFolder, list_runs
from animegan.training import TrainingManager
from animegan.weights import load_weights

animegan.ui.build_app()
out = Path(sys.argv[-1])
manager = TrainingManager(out / "runs")
assert sorted(manager.runs()) == ["faces", "style"], manager.runs()
assert manager.status("faces").checkpoint_step == 2
faces = export_run(out / "runs" / "faces", out / "weights", "tiny-faces")
style = export_run(out / "runs" / "style", out / "weights", "tiny-style")
assert load_weights(str(faces)).kind == "faces" and load_weights(str(style)).kind == "style"
assert faces.with_name("tiny-faces.sliders.safetensors").is_file()
generator, step = _run_generator(RunFolder(out / "runs" / "faces"), "cpu")
assert step == 2 and generator.latent_dim == 8
print("no-trainer checks passed")
'''


def _tree_without_trainers(tmp: Path) -> Path:
    tree = tmp / "checkout"
    shutil.copytree(REPO / "animegan", tree / "animegan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "app.py", tree / "app.py")
    (tree / "run_without_trainers.py").write_text(DRIVER, encoding="utf-8")
    assert not (tree / TRAINERS).exists()
    return tree


def _write_runs(root: Path) -> None:
    """A face run and a style run as the trainers leave them: config.json, a checkpoint, metrics."""
    from animegan.models import build_model
    from animegan.models.dcgan import DCGANGenerator, variant_configs
    from animegan.runs import RunFolder

    torch.manual_seed(0)
    faces = RunFolder(root / "faces")
    config = {"data": "faces/", "arch": "dcgan", "image_size": 16, "latent_dim": 8, "g_width": 8,
              "upsample": "transposed", "steps": 2}
    faces.create(config)
    g_cfg, _ = variant_configs("dcgan", 16, 8, 8)
    faces.save_checkpoint(2, {"G": DCGANGenerator(g_cfg).state_dict()})
    faces.log(2, loss_G=1.0, fid=123.0)
    style = RunFolder(root / "style")
    style.create({"trainer": "animegan", "recipe": "v2", "preset": "scenery", "data": "style/", "size": 32})
    style.save_checkpoint(1, {"generator": build_model("animeganv2").state_dict()})
    style.log(1, loss_content=0.5)


def _run_in(tree: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(ANIMEGAN_OFFLINE="1", HF_HUB_OFFLINE="1", ANIMEGAN_WEIGHTS_DIR=str(REPO / "weights"),
               ANIMEGAN_RUNS_DIR=str(tree / "runs"), GRADIO_ANALYTICS_ENABLED="False", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "run_without_trainers.py", *args], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_library_cli_app_and_export_work_without_the_trainers(tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    tree = _tree_without_trainers(tmp_path)
    _write_runs(tmp_path / "runs")

    helped = _run_in(tree, "-m", "animegan", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "stylize" in helped.stdout and "fid" in helped.stdout and "push" in helped.stdout

    styles = _run_in(tree, "-m", "animegan", "styles")
    assert styles.returncode == 0, styles.stderr
    assert "face_paint_512_v2" in styles.stdout

    checked = _run_in(tree, "-c", EXPORT_CHECK, str(tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no-trainer checks passed" in checked.stdout
    meta = json.loads((tmp_path / "weights" / "tiny-faces.json").read_text())
    assert meta["config"] == {"image_size": 16, "latent_dim": 8, "width": 8, "max_channels": 512,
                              "upsample": "transposed"}
    assert meta["training_data"]["variant"] == "dcgan" and meta["metrics"]["fid"] == 123.0


def test_the_no_trainer_check_fails_when_the_library_needs_them(tmp_path: Path) -> None:
    """The copy really lacks the trainers: a library module that imports them breaks the CLI there."""
    tree = _tree_without_trainers(tmp_path)
    styles = tree / "animegan" / "cli" / "styles.py"
    styles.write_text(styles.read_text(encoding="utf-8") + "\nfrom train.faces import main  # re-added by mistake\n",
                      encoding="utf-8")
    broken = _run_in(tree, "-m", "animegan", "styles")
    assert broken.returncode != 0 and "this install has no trainers" in broken.stderr
    assert trainer_imports(styles.read_text(encoding="utf-8"))
