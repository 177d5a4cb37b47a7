"""Named, documented training configurations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Everything a standard training run needs to know, with nothing hidden.

    ``augment`` names the training augmentation in order: ``"crop"`` (pad by ``crop_padding``
    and crop back), ``"resized_crop"`` (``RandomResizedCrop`` to the image size), ``"flip"``.
    ``schedule`` is ``"onecycle"``, ``"cosine"`` (with ``warmup_epochs``) or ``"constant"``.
    ``epochs`` is a whole number, except in speed recipes, which may stop part-way through an
    epoch. ``normalize`` overrides the dataset's per-channel mean and std. ``tta`` is 0/``False``
    (none), 1/``True`` (mirror) or 2 (mirror and one-pixel shifts). ``optimizer="muon"`` makes
    a speed recipe, trained by :class:`~mlxvision.recipes.fast.SpeedRun` with the data held on
    the device; ``options`` holds its further settings
    (:data:`~mlxvision.recipes.fast.SPEED_OPTIONS`).

    Example:
        >>> r = get_recipe("digits")
        >>> r.model, r.epochs, r.replace(epochs=3).epochs
        ('simple_cnn', 20, 3)
    """

    name: str
    description: str
    dataset: str
    model: str
    epochs: int | float
    batch_size: int
    optimizer: str
    lr: float
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()
    crop_padding: int = 4
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    precision: str = "float32"
    ema_decay: float | None = None
    tta: bool | int = False
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (unknown names raise)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"Recipe has no field {', '.join(unknown)}; fields: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        """The recipe :meth:`to_dict` (and so a run's ``recipe.json``) describes."""
        values = dict(values)
        values["augment"] = tuple(values.get("augment", ()))
        if values.get("normalize"):
            values["normalize"] = tuple(tuple(v) for v in values["normalize"])
        return cls(**values)


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the catalog under its name (replacing one of the same name), so
    ``get_recipe`` and ``mlxvision train --recipe NAME`` find it. Returns the recipe.

    Example:
        >>> mine = register_recipe(get_recipe("digits").replace(name="my_digits", epochs=5))
        >>> get_recipe("my_digits").epochs
        5
        >>> del RECIPES["my_digits"]
    """
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``.

    Example:
        >>> get_recipe("cifar10_resnet").model
        'resnet18'
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def list_recipes() -> list[str]:
    """Names of the registered recipes.

    Example:
        >>> "digits" in list_recipes()
        True
    """
    return sorted(RECIPES)


register_recipe(
    Recipe(
        name="digits",
        description="The tutorial's CNN on the embedded 8×8 digits: the offline quick start.",
        dataset="digits",
        model="simple_cnn",
        epochs=20,
        batch_size=64,
        optimizer="adam",
        lr=1e-3,
        schedule="cosine",
        augment=("crop",),
        crop_padding=1,
    )
)

register_recipe(
    Recipe(
        name="cifar10_tutorial",
        description=(
            "The classic tutorial on CIFAR-10: simple_cnn, RandomResizedCrop(32) + flip, "
            "Normalize(0.5, 0.5), Adam 1e-3, batch 64, 10 epochs."
        ),
        dataset="cifar10",
        model="simple_cnn",
        epochs=10,
        batch_size=64,
        optimizer="adam",
        lr=1e-3,
        schedule="constant",
        augment=("resized_crop", "flip"),
        normalize=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    )
)

register_recipe(
    Recipe(
        name="cifar10_resnet",
        description=(
            "ResNet-18 (CIFAR stem) on CIFAR-10 in 30 epochs: SGD-Nesterov, one-cycle to 0.2, "
            "weight decay 5e-4 off norms and biases, label smoothing 0.1, pad-crop + flip, "
            "bfloat16, batch 512, flip test-time augmentation."
        ),
        dataset="cifar10",
        model="resnet18",
        model_kwargs={"cifar_stem": True},
        epochs=30,
        batch_size=512,
        optimizer="sgd",
        lr=0.2,
        weight_decay=5e-4,
        schedule="onecycle",
        label_smoothing=0.1,
        augment=("crop", "flip"),
        precision="bfloat16",
        tta=True,
    )
)

register_recipe(
    Recipe(
        name="cifar10_fast",
        description=(
            "The speed recipe, after the airbench94 (Muon) CIFAR-10 record: airbench_net with a "
            "whitened stem, Muon for the filters and SGD-Nesterov for the rest, linear decay, "
            "label smoothing 0.2, alternating flips + 2-pixel translation on the device, "
            "bfloat16, batch 2000, 9 epochs (airbench: 8), test-time augmentation with flips "
            "and shifts."
        ),
        dataset="cifar10",
        model="airbench_net",
        model_kwargs={"widths": [64, 256, 256], "logit_scale": 1 / 256},
        epochs=9,
        batch_size=2000,
        optimizer="muon",
        lr=0.24,
        momentum=0.85,
        weight_decay=2e-6,
        schedule="linear",
        label_smoothing=0.2,
        augment=("translate", "flip"),
        crop_padding=2,
        precision="bfloat16",
        tta=2,
    )
)

register_recipe(
    get_recipe("cifar10_fast").replace(
        name="cifar10_fast_cpu",
        description=(
            "The speed recipe scaled for a CPU: airbench_net at widths (48, 96, 96) with ReLU "
            "(MLX's CPU backend computes GELU's erf slowly), float32, batch 1000, 4 epochs. "
            "Fastest as one process per two cores: mlx.launch -n 2 --backend ring ... "
            "mlxvision train --recipe cifar10_fast_cpu --distributed."
        ),
        model_kwargs={"widths": [48, 96, 96], "logit_scale": 1 / 96, "activation": "relu"},
        options={"eval_batch_size": 1000},
        epochs=4,
        batch_size=1000,
        precision="float32",
    )
)
