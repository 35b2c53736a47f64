"""YAML recipes: the schema of what a recipe may say (:mod:`atlas_kit.recipes.schema`: layered
defaults < base files < recipe < ``key=value`` overrides, checked at every depth) and the run it
describes (:mod:`atlas_kit.recipes.run`)."""
from atlas_kit.recipes.run import RUN_FILES, build_atlas, check_output_dir, load_corpus, load_model_checkpoint, run_recipe
from atlas_kit.recipes.schema import DEFAULTS, Recipe, apply_overrides, load_recipe, validate_recipe

__all__ = ["DEFAULTS", "Recipe", "load_recipe", "apply_overrides", "validate_recipe", "check_output_dir",
           "run_recipe", "build_atlas", "load_corpus", "load_model_checkpoint", "RUN_FILES"]
