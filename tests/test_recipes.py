import json

import numpy as np
import pytest

from mlxvision.recipes import Recipe, get_recipe, list_recipes, load_datasets, train_transform


def test_recipes_are_registered_and_round_trip_through_json():
    assert {"digits", "cifar10_tutorial", "cifar10_resnet"} <= set(list_recipes())
    recipe = get_recipe("cifar10_resnet")
    assert (recipe.model, recipe.epochs, recipe.batch_size, recipe.precision) == (
        "resnet18",
        30,
        512,
        "bfloat16",
    )
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe


def test_bad_recipe_names_and_fields_are_named():
    with pytest.raises(ValueError, match="Unknown recipe 'nope'.*digits"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="no field epoch;"):
        get_recipe("digits").replace(epoch=3)


def test_datasets_by_name_and_their_errors(tmp_path):
    train, test = load_datasets("digits")
    assert (len(train), len(test)) == (1437, 360)
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'"):
        load_datasets("imagenet", tmp_path)
    with pytest.raises(ValueError, match="needs a data folder"):
        load_datasets("cifar10")
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        load_datasets("mnist", tmp_path / "missing")


def test_train_transform_follows_the_recipe():
    recipe = get_recipe("digits")
    t = train_transform(recipe, (8, 8, 1), (0.5,), (0.25,))
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["RandomCrop", "ToTensor", "Normalize"]
    import mlx.core as mx

    x = mx.full((2, 8, 8, 1), 255, dtype=mx.uint8)
    out = np.array(t(x, key=mx.random.key(0)))
    assert out.max() == pytest.approx((1 - 0.5) / 0.25)  # crop padding brings zeros in at most
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        train_transform(recipe.replace(augment=("blur",)), (8, 8, 1), (0.5,), (0.25,))
