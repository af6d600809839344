"""Every recipe in train/recipes/ is a config its trainer accepts (a README command runs it as it is)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

RECIPES = sorted((Path(__file__).resolve().parents[1] / "train" / "recipes").glob("*.json"))


def test_there_are_recipes() -> None:
    assert len(RECIPES) >= 8


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_a_valid_config_of_its_trainer(path: Path) -> None:
    values = json.loads(path.read_text(encoding="utf-8"))
    if "recipe" in values:  # train.animegan: a style
        from train.animegan import StyleTrainConfig

        StyleTrainConfig.from_dict({"data": "data/x", **values})
    elif "blocks" in values or "channels" in values:  # train.face_upscaler
        from train.face_upscaler import config_from_dict

        config_from_dict({"perceptual": "inception", **values}).resolved()
    else:  # train.faces
        from train.faces import config_from_dict

        config_from_dict(values).resolved()
