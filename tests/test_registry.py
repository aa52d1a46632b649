import pytest
import torch
from torch import nn

import zoo
from zoo.registry import _REGISTRY


def test_list_models_uses_fnmatch_and_is_sorted():
    names = zoo.list_models()
    assert names == sorted(names) and {"mlp_small", "cnn_simple", "cnn_bn"} <= set(names)
    assert zoo.list_models("cnn*") == [name for name in names if name.startswith("cnn")]
    assert zoo.list_models("*_cifar") and all(name.endswith("_cifar") for name in zoo.list_models("*_cifar"))
    assert zoo.list_models("no_such_*") == []


def test_list_models_by_family_and_task():
    assert set(zoo.list_models(family="mlp")) == {"mlp_small", "mlp_base", "mlp_regressor"}
    denoisers = zoo.list_models(task="denoising")
    unets = {"unet", "unet_residual", "unet_attention", "unet_small", "unet_residual_small", "unet_attention_small"}
    assert set(denoisers) == {"dncnn_s", "ircnn", "unet_denoiser_small", *unets}
    assert all(isinstance(zoo.create_model(name), zoo.Denoiser) for name in denoisers)
    classifiers = zoo.list_models(task="image_classification")
    assert all(isinstance(zoo.create_model(name), zoo.ImageClassifier) for name in classifiers)
    sequence = zoo.list_models(task="sequence_classification")
    assert {"lstm_smnist", "gru_parity"} <= set(sequence)
    assert all(isinstance(zoo.create_model(name), zoo.SequenceClassifier) for name in sequence)
    taggers = zoo.list_models(task="sequence_tagging")
    assert all(isinstance(zoo.create_model(name), zoo.SequenceTagger) for name in taggers) and taggers
    forecasters = zoo.list_models(task="forecasting")
    assert all(isinstance(zoo.create_model(name), zoo.Forecaster) for name in forecasters) and forecasters
    language_models = zoo.list_models(task="language_modeling")
    assert all(isinstance(zoo.create_model(name), zoo.LanguageModel) for name in language_models) and language_models
    seq2seq = zoo.list_models(task="seq2seq")
    assert all(isinstance(zoo.create_model(name), zoo.Seq2SeqTask) for name in seq2seq) and seq2seq
    regressors = zoo.list_models(task="regression")
    assert all(isinstance(zoo.create_model(name), zoo.Regressor) for name in regressors) and regressors
    autoencoders = zoo.list_models(task="reconstruction")
    assert {"conv_autoencoder_mnist", "conv_vae_mnist"} <= set(autoencoders)
    assert all(isinstance(zoo.create_model(name), zoo.Reconstruction) for name in autoencoders)
    partition = classifiers + denoisers + sequence + taggers + forecasters + language_models + seq2seq + regressors
    point_clouds = zoo.list_models(task="point_cloud_classification")
    assert {"pointnet_shapes", "pointnet_modelnet40"} <= set(point_clouds)
    assert all(isinstance(zoo.create_model(name), zoo.PointNet) for name in point_clouds)
    captioners = zoo.list_models(task="captioning")
    assert {"caption_lstm_digits", "caption_transformer_digits"} <= set(captioners)
    assert all(isinstance(zoo.create_model(name), zoo.ImageCaptioner) for name in captioners)
    partition += autoencoders + point_clouds + captioners
    assert sorted(partition) == zoo.list_models()


def test_create_model_applies_overrides_and_ignores_none():
    model = zoo.create_model("mlp_small", num_classes=3, dropout=None, hidden_dims=(32,))
    assert isinstance(model, zoo.MLP)
    assert model.num_classes == 3 and model.hparams.hidden_dims == [32] and model.hparams.dropout == 0.0
    assert model.head.out_features == 3


def test_unknown_model_suggests_close_matches():
    with pytest.raises(zoo.UnknownModelError, match=r"Did you mean: .*cnn_simple"):
        zoo.create_model("cnn_simpel")
    with pytest.raises(ValueError, match="list_models"):
        zoo.model_info("completely_different")


def test_a_preset_is_data_bound_to_a_builder():
    """The decorated function returns arguments; its name becomes a builder whose overrides win."""

    @zoo.register_model(zoo.MLP, input_size=(1, 4, 4), num_params=1, source="test")
    def registry_test_model() -> dict:
        """A tiny MLP."""
        return dict(img_size=4, hidden_dims=(8,))

    try:
        assert zoo.preset_config("registry_test_model", num_classes=3) == {
            "class_path": "zoo.mlp.MLP",
            "init_args": {"img_size": 4, "hidden_dims": [8], "num_classes": 3},
        }
        model = registry_test_model(num_classes=3)
        assert isinstance(model, zoo.MLP) and model.num_classes == 3 and model.hparams.hidden_dims == [8]
        assert registry_test_model.__doc__ == "A tiny MLP." and registry_test_model.__name__ == "registry_test_model"
        with pytest.raises(ValueError, match="already registered"):

            @zoo.register_model(zoo.MLP, input_size=(1, 4, 4))
            def registry_test_model() -> dict:
                return {}

    finally:
        del _REGISTRY["registry_test_model"]


def test_every_preset_has_metadata():
    for name in zoo.list_models():
        info = zoo.model_info(name)
        assert info.name == name and info.source and info.input_spec.describe()
        assert info.num_params, f"{name} has no parameter count"


def test_input_spec_says_kind_dtype_and_length():
    assert zoo.model_info("resnet18").input_spec == zoo.InputSpec((3, 224, 224), kind="image")
    assert zoo.model_info("volumetric_cnn_small").input_spec.kind == "volume"
    tokens = zoo.model_info("gru_parity").input_spec
    assert tokens.dtype == torch.long and tokens.variable_length and tokens.vocab_size == 2
    assert tokens.describe() == "tokens (T<=64,) int64, ids < 2"
    assert zoo.model_info("lstm_smnist").input_spec.describe() == "series (T=28, 28) float32"
    with pytest.raises(ValueError, match="2 dims"):
        zoo.InputSpec((3, 4, 4), kind="series")
    with pytest.raises(ValueError, match=r"torch\.long"):
        zoo.InputSpec((8,), kind="tokens")  # token ids without a dtype and vocabulary


def test_preset_config_builds_nothing(monkeypatch):
    """Resolving the 86M-parameter ViT-B reads its arguments; no layer is constructed."""
    built = []
    monkeypatch.setattr(nn.Linear, "__init__", lambda self, *a, **k: built.append(a) or nn.Module.__init__(self))
    config = zoo.preset_config("vit_base_patch16_224", num_classes=7)
    assert config["class_path"] == "zoo.vit.VisionTransformer" and not built
    assert config["init_args"]["embed_dim"] == 768 and config["init_args"]["num_classes"] == 7
    with pytest.raises(zoo.UnknownModelError, match="vit_base_patch16_224"):
        zoo.preset_config("vit_base_patch16_22")
