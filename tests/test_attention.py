"""Attention from scratch against torch's own: SDPA and nn.MultiheadAttention parity, masks, positions, the callback."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, quiet_trainer
from torch import nn

import zoo
from callbacks import AttentionMapLogger
from zoo.layers.attention import (
    EncoderBlock,
    KVCache,
    MultiHeadAttention,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    causal_mask,
    scaled_dot_product_attention,
)
from zoo.transformer import TransformerEncoder

ATOL = 1e-5


def _mask(batch: int, queries: int, keys: int, generator: torch.Generator) -> torch.Tensor:
    mask = torch.rand(batch, 1, queries, keys, generator=generator) > 0.4
    mask[..., 0] = True  # every query sees at least one key
    return mask


@pytest.mark.parametrize("need_weights", [False, True])
def test_scaled_dot_product_attention_equals_torch(need_weights):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (5, 7, 7))
    mask = _mask(2, 5, 7, g)
    out, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=ATOL, rtol=0)
    if need_weights:
        assert weights.shape == (2, 3, 5, 7)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()
    else:
        assert weights is None


def _copy_from_torch(reference: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    q, k, v = reference.in_proj_weight.chunk(3)
    qb, kb, vb = reference.in_proj_bias.chunk(3)
    with torch.no_grad():
        for proj, weight, bias in ((ours.q_proj, q, qb), (ours.k_proj, k, kb), (ours.v_proj, v, vb)):
            proj.weight.copy_(weight), proj.bias.copy_(bias)
        ours.out_proj.weight.copy_(reference.out_proj.weight), ours.out_proj.bias.copy_(reference.out_proj.bias)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_multi_head_attention_equals_nn_multihead_attention(causal, need_weights):
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ours = MultiHeadAttention(16, 4).eval()
    _copy_from_torch(reference, ours)
    x = torch.randn(3, 6, 16)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = padding[2, 2:] = True  # True at padded keys, as nn.MultiheadAttention takes it
    attn_mask = ~causal_mask(6, 6) if causal else None  # nn.MultiheadAttention: True means "may not attend"
    expected, expected_weights = reference(x, x, x, key_padding_mask=padding, attn_mask=attn_mask)
    out, weights = ours(x, key_padding_mask=padding, causal=causal, need_weights=need_weights)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    if need_weights:  # ours per head; torch's averaged over heads
        torch.testing.assert_close(weights.mean(1), expected_weights, atol=ATOL, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_block_equals_nn_transformer_encoder_layer(norm_first):
    """Pre-norm and post-norm blocks against torch's own layer with the same weights."""
    torch.manual_seed(0)
    reference = nn.TransformerEncoderLayer(
        16, 4, dim_feedforward=64, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first
    ).eval()
    ours = EncoderBlock(16, 4, norm_first=norm_first).eval()
    _copy_from_torch(reference.self_attn, ours.attn)
    with torch.no_grad():
        for mine, theirs in ((ours.mlp[0], reference.linear1), (ours.mlp[2], reference.linear2)):
            mine.weight.copy_(theirs.weight), mine.bias.copy_(theirs.bias)
        for mine, theirs in ((ours.norm1, reference.norm1), (ours.norm2, reference.norm2)):
            mine.weight.copy_(torch.rand(16) + 0.5), mine.bias.copy_(torch.randn(16))
            theirs.weight.copy_(mine.weight), theirs.bias.copy_(mine.bias)
    x = torch.randn(2, 5, 16)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    out, _ = ours(x, key_padding_mask=padding)
    torch.testing.assert_close(out, reference(x, src_key_padding_mask=padding), atol=ATOL, rtol=0)
    if not norm_first:  # a post-norm stack ends normalized: no final LayerNorm
        assert isinstance(TransformerEncoder(16, 2, 4, norm_first=False).norm, nn.Identity)


def test_cross_attention_equals_nn_multihead_attention():
    torch.manual_seed(1)
    reference = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    ours = MultiHeadAttention(8, 2).eval()
    _copy_from_torch(reference, ours)
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False, False, True, True, True]])
    expected, _ = reference(query, memory, memory, key_padding_mask=padding)
    torch.testing.assert_close(ours(query, memory, key_padding_mask=padding)[0], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("rotary", [False, True])
def test_kv_cache_gives_the_outputs_of_the_whole_sequence(rotary):
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, rotary=rotary).eval()
    x = torch.randn(2, 7, 16)
    full, _ = attn(x, causal=True)
    cache = KVCache()
    prefix, _ = attn(x[:, :4], causal=True, cache=cache)
    steps = [attn(x[:, t : t + 1], causal=True, cache=cache)[0] for t in range(4, 7)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=ATOL, rtol=0)
    assert cache.length == 7


def test_rotary_scores_depend_on_relative_position_only():
    rotary = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(query_position: int, key_position: int) -> torch.Tensor:
        return (rotary(q, query_position) * rotary(k, key_position)).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))
    assert not torch.allclose(score(5, 2), score(5, 4))
    torch.testing.assert_close(rotary(q, 0), q)  # position 0 is not rotated


def test_sinusoidal_encoding_follows_the_formula():
    table = SinusoidalPositionalEncoding(8, max_length=32)(torch.zeros(1, 32, 8))[0]
    positions = torch.arange(32.0)
    torch.testing.assert_close(table[:, 0], torch.sin(positions))
    torch.testing.assert_close(table[:, 1], torch.cos(positions))
    torch.testing.assert_close(table[:, 6], torch.sin(positions / 10000 ** (6 / 8)))
    with pytest.raises(ValueError, match="max_length=32"):
        SinusoidalPositionalEncoding(8, max_length=32)(torch.zeros(1, 33, 8))


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rotary"])
def test_a_future_token_never_changes_an_earlier_output(position):
    torch.manual_seed(0)
    model = zoo.create_model("gpt_test", position=position).eval()
    x = torch.randint(0, 16, (2, 12))
    changed = x.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 16
    before, after = model(x), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], atol=ATOL, rtol=0)
    assert not torch.allclose(before[:, 7:], after[:, 7:])
    block = EncoderBlock(16, 2).eval()
    h = torch.randn(1, 6, 16)
    h2 = h.clone()
    h2[:, 3:] += 1
    torch.testing.assert_close(block(h, causal=True)[0][:, :3], block(h2, causal=True)[0][:, :3])


def test_padding_never_changes_a_classification():
    torch.manual_seed(0)
    model = zoo.create_model("transformer_cls_test").eval()
    short = torch.randint(0, 8, (1, 5))
    batch = torch.randint(0, 8, (2, 9))
    batch[0, :5] = short[0]  # the short sequence followed by arbitrary padding
    lengths = torch.tensor([5, 9])
    torch.testing.assert_close(model(batch, lengths)[0], model(short)[0], atol=ATOL, rtol=0)
    other = batch.clone()
    other[0, 5:] = (other[0, 5:] + 3) % 8
    torch.testing.assert_close(model(other, lengths), model(batch, lengths), atol=ATOL, rtol=0)


def test_weight_tying_shares_one_matrix():
    tied, untied = zoo.create_model("gpt_test"), zoo.create_model("gpt_test", tie_weights=False)
    assert tied.head.weight is tied.token_embedding.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 16 * 32


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []

    def __call__(self, trainer, tag, image, step) -> int:
        self.calls.append((tag, image))
        return 1


def test_attention_map_logger_logs_one_image_per_sample(monkeypatch):
    import callbacks.attention_maps as module

    recorder = _Recorder()
    monkeypatch.setattr(module, "log_image", recorder)
    torch.manual_seed(0)
    model = zoo.create_model("transformer_cls_test")
    x, y, lengths = model.example_batch(8)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, lengths), batch_size=4)
    callback = AttentionMapLogger(num_samples=3, max_heads=2)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[callback]
    )
    trainer.fit(model, data, data)
    assert [tag for tag, _ in recorder.calls] == ["attention/sample_0", "attention/sample_1", "attention/sample_2"]
    weights = callback.last_maps["encoder.0"]
    assert weights.shape == (3, 2, 16, 16)  # (samples, heads, queries, keys)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 16))
    assert (weights[1, :, :, lengths[1] :] == 0).all()  # padded keys get no attention
    image = recorder.calls[0][1]
    assert image.shape == (1, 1 * 17 + 1, 2 * 17 + 1) and image.max() <= 1


def test_attention_map_logger_validates_and_needs_the_hook():
    with pytest.raises(ValueError, match="num_samples"):
        AttentionMapLogger(num_samples=0)
    trainer = quiet_trainer()
    with pytest.raises(TypeError, match="attention_maps"):
        AttentionMapLogger().setup(trainer, zoo.create_model("gru_tagger_test"), "fit")


@pytest.mark.parametrize("name", ["gpt_test", "seq2seq_transformer_test", "lstm_seq2seq_test"])
def test_models_offer_attention_maps_that_are_distributions(name):
    model = zoo.create_model(name).eval()
    x = model.example_batch(2)[0] if name != "gpt_test" else torch.randint(0, 16, (2, 10))
    maps = model.attention_maps(x)
    assert maps
    for weights in maps.values():
        assert weights.ndim == 4 and weights.shape[0] == 2
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_digits_transformer_recipe_runs_with_no_argument():
    from recipes import digits_transformer

    cli = digits_transformer.main(["fit", "--trainer.fast_dev_run=2", *QUIET])
    assert isinstance(cli.model, zoo.TransformerClassifier) and cli.model.hparams.pooling == "mean"
    assert (cli.model.in_features, cli.model.max_length, cli.model.num_classes) == (8, 8, 10)  # linked from the data
    assert cli.trainer.checkpoint_callback.monitor == "val/acc" and "test/acc" in cli.trainer.callback_metrics
