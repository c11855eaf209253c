"""Recipes: the device picks one, its fields build a valid TrainConfig, overrides win."""

from bids_harmonize.model.networks import PRESETS
from bids_harmonize.model.recipes import RECIPES, recipe_for


def test_the_device_picks_the_recipe():
    assert recipe_for("cuda") is RECIPES["gpu"]
    assert recipe_for("cpu") is RECIPES["cpu"]


def test_every_recipe_builds_a_config_of_a_known_preset_and_overrides_win():
    for recipe in RECIPES.values():
        assert recipe.preset in PRESETS
        config = recipe.train_config(iterations=7, seed=3)
        assert (config.iterations, config.seed, config.batch_size) == (7, 3, recipe.batch_size)
        assert config.loss_weights.histogram > 0  # the style-aware layout trains with the histogram term
