"""Recipes: named training configurations, and running one end to end.

Example:
    >>> from mlxvision.recipes import get_recipe, list_recipes, run_recipe
    >>> get_recipe("digits").dataset
    'digits'
"""

from .catalog import DATASETS, load_datasets
from .recipe import Recipe, get_recipe, list_recipes, register_recipe
from .run import eval_transform, run_recipe, train_transform

__all__ = [
    "DATASETS",
    "Recipe",
    "eval_transform",
    "get_recipe",
    "list_recipes",
    "load_datasets",
    "register_recipe",
    "run_recipe",
    "train_transform",
]
