import pytest
from torch import nn

import zoo
from zoo._registry import _REGISTRY


def test_list_models_uses_fnmatch_and_is_sorted():
    names = zoo.list_models()
    assert names == sorted(names) and {"mlp_small", "cnn_simple", "cnn_bn"} <= set(names)
    assert zoo.list_models("cnn*") == [name for name in names if name.startswith("cnn")]
    assert zoo.list_models("*_cifar") and all(name.endswith("_cifar") for name in zoo.list_models("*_cifar"))
    assert zoo.list_models("no_such_*") == []


def test_list_models_by_family_and_task():
    assert set(zoo.list_models(family="mlp")) == {"mlp_small", "mlp_base"}
    denoisers = zoo.list_models(task="denoising")
    assert set(denoisers) == {"dncnn_s", "ircnn", "unet_denoiser_small"}
    assert all(isinstance(zoo.create_model(name), zoo.Denoiser) for name in denoisers)
    classifiers = zoo.list_models(task="image_classification")
    assert sorted(classifiers + denoisers) == zoo.list_models()
    assert all(isinstance(zoo.create_model(name), zoo.ImageClassifier) for name in classifiers)


def test_create_model_applies_overrides_and_ignores_none():
    model = zoo.create_model("mlp_small", num_classes=3, dropout=None, hidden_dims=(32,))
    assert isinstance(model, zoo.MLP)
    assert model.num_classes == 3 and model.hparams.hidden_dims == (32,) and model.hparams.dropout == 0.0
    assert model.head.out_features == 3


def test_unknown_model_suggests_close_matches():
    with pytest.raises(zoo.UnknownModelError, match=r"Did you mean: .*cnn_simple"):
        zoo.create_model("cnn_simpel")
    with pytest.raises(ValueError, match="list_models"):
        zoo.model_info("completely_different")


def test_duplicate_name_raises():
    @zoo.register_model(input_size=(1, 4, 4))
    def registry_test_model(**overrides) -> nn.Module:
        return nn.Identity()

    try:
        with pytest.raises(ValueError, match="already registered"):
            zoo.register_model(input_size=(1, 4, 4))(registry_test_model)
    finally:
        del _REGISTRY["registry_test_model"]


def test_every_preset_has_metadata():
    for name in zoo.list_models():
        info = zoo.model_info(name)
        assert info.name == name and info.source and len(info.input_size) >= 3
        assert info.num_params, f"{name} has no parameter count"
