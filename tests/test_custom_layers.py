"""Custom layers checked against PyTorch: autograd functions and the learned-slope Swish against finite differences
(float64 ``gradcheck``), BatchNorm from scratch against ``nn.BatchNorm2d`` in every mode, the MLP variants' shortcut
and input split, and the C++ operator ``zoo::swish`` against its PyTorch twin (eager, ``torch.compile``, fallback)."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.utils import cpp_extension

import zoo
from zoo.layers import BatchNorm2dScratch, LearnableSwish, custom_op, get_act_layer
from zoo.layers import autograd as fn
from zoo.tasks.optim import weight_decay_groups

# --- autograd functions --------------------------------------------------------------------------------------------

FUNCTIONS = {
    "square": (fn.square, lambda x: x**2, True),
    "sigmoid": (fn.sigmoid, torch.sigmoid, True),
    "relu": (fn.relu, torch.relu, False),  # the derivative jumps at 0: no second-order check
}


def _away_from_zero(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """float64 values with |x| >= 0.1, so finite differences never straddle ReLU's kink."""
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (x + 0.1 * x.sign()).requires_grad_()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_autograd_function_matches_torch_and_finite_differences(name):
    function, reference, twice = FUNCTIONS[name]
    x = _away_from_zero((4, 5))
    y = function(x)
    torch.testing.assert_close(y, reference(x), rtol=0, atol=1e-12)
    grad_output = torch.randn_like(y)
    (ours,) = torch.autograd.grad(y, x, grad_output)
    (theirs,) = torch.autograd.grad(reference(x), x, grad_output)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert gradcheck(function, (x,))
    if twice:
        assert gradgradcheck(function, (x,))


def test_autograd_functions_save_what_backward_needs():
    x = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    y = fn.sigmoid(x)
    (saved,) = y.grad_fn.saved_tensors
    assert torch.equal(saved, y)  # the output, not the input
    (mask,) = fn.relu(x).grad_fn.saved_tensors
    assert mask.dtype == torch.bool and mask.tolist() == [False, False, True]
    fn.relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]  # 0 at the kink, as torch.relu


# --- learned-slope Swish ---------------------------------------------------------------------------------------------


def test_learnable_swish_gradients_for_input_and_beta():
    act = LearnableSwish(beta=1.3).double()

    def swish(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(act, {"beta": beta}, (x,))

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(swish, (x, beta)) and gradgradcheck(swish, (x, beta))
    act(x).sum().backward()
    s = torch.sigmoid(1.3 * x.detach())
    torch.testing.assert_close(act.beta.grad, (x.detach() ** 2 * s * (1 - s)).sum())  # d/d beta, by hand


def test_learnable_swish_is_registered_trains_and_gets_no_weight_decay():
    assert get_act_layer("swish_beta") is LearnableSwish
    act = LearnableSwish()
    x = torch.randn(16)
    torch.testing.assert_close(act(x), nn.functional.silu(x))  # beta starts at 1: SiLU
    optimizer = torch.optim.SGD(act.parameters(), lr=0.1)
    (act(x) - 2 * x).pow(2).mean().backward()
    optimizer.step()
    assert act.beta.item() != 1.0
    model = zoo.create_model("residual_mlp_regressor")  # uses act="swish_beta" by name
    betas = {id(m.beta) for m in model.modules() if isinstance(m, LearnableSwish)}
    assert len(betas) == model.hparams.depth
    no_decay = {
        id(p) for group in weight_decay_groups(model, 0.01) if group["weight_decay"] == 0 for p in group["params"]
    }
    assert betas <= no_decay


# --- BatchNorm from scratch ------------------------------------------------------------------------------------------

TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def _pair(dtype: torch.dtype, **kwargs) -> tuple[BatchNorm2dScratch, nn.BatchNorm2d]:
    scratch, reference = BatchNorm2dScratch(3, **kwargs).to(dtype), nn.BatchNorm2d(3, **kwargs).to(dtype)
    if scratch.affine:  # weights other than the initial 1 and 0
        with torch.no_grad():
            scratch.weight.uniform_(0.5, 1.5), scratch.bias.uniform_(-0.5, 0.5)
    reference.load_state_dict(scratch.state_dict())
    return scratch, reference


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3}, {"affine": False}, {"track_running_stats": False}],
    ids=["default", "cumulative", "momentum-eps", "no-affine", "no-running-stats"],
)
def test_batchnorm_scratch_equals_torch_in_train_and_eval(dtype, kwargs):
    torch.manual_seed(0)
    scratch, reference = _pair(dtype, **kwargs)
    tol = TOLERANCES[dtype]
    for step in range(4):  # batches of other statistics and sizes move the running statistics
        x = (torch.randn(4 + step, 3, 5, 6, dtype=dtype) * (1 + step) + step).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        out, out_ref = scratch(x), reference(x_ref)
        torch.testing.assert_close(out, out_ref, **tol)
        grad_output = torch.randn_like(out)
        out.backward(grad_output), out_ref.backward(grad_output)
        torch.testing.assert_close(x.grad, x_ref.grad, **tol)
        if scratch.affine:
            torch.testing.assert_close(scratch.weight.grad, reference.weight.grad, **tol)
            torch.testing.assert_close(scratch.bias.grad, reference.bias.grad, **tol)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(scratch.state_dict()[key], value, **tol)
    if scratch.track_running_stats:
        assert int(scratch.num_batches_tracked) == 4
    scratch.eval(), reference.eval()
    x = torch.randn(2, 3, 5, 6, dtype=dtype)
    torch.testing.assert_close(scratch(x), reference(x), **tol)


def test_batchnorm_scratch_state_dict_loads_either_way():
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(4)
    reference(torch.randn(8, 4, 3, 3) * 3 + 1)  # running statistics away from their initial values
    scratch = BatchNorm2dScratch(4)
    assert list(scratch.state_dict()) == list(reference.state_dict())
    scratch.load_state_dict(reference.state_dict())  # strict
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(scratch.eval()(x), reference.eval()(x))
    nn.BatchNorm2d(4).load_state_dict(scratch.state_dict())
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 4, H, W\), got \(2, 3, 3, 3\)"):
        scratch(torch.randn(2, 3, 3, 3))


# --- the MLP variants ------------------------------------------------------------------------------------------------


def test_residual_block_shortcut_is_the_identity():
    model = zoo.create_model("residual_mlp_regressor").eval()
    block = model.blocks[0]
    x = torch.randn(5, model.hparams.width)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.layer(x))
        linear = block.layer[0]
        linear.weight.zero_(), linear.bias.zero_()  # the layer's output is then 0 (LayerNorm of 0, Swish of 0)
    torch.testing.assert_close(block(x), x)


def test_image_tabular_regressor_reads_each_input_in_its_branch():
    torch.manual_seed(0)
    model = zoo.create_model("image_tabular_regressor").eval()
    image, table = torch.randn(3, 1, 8, 8), torch.randn(3, 8)
    x = model.join_inputs(image, table)
    assert x.shape == (3, zoo.model_info("image_tabular_regressor").input_size[0])
    split_image, split_table = model.split_inputs(x)
    assert torch.equal(split_image, image) and torch.equal(split_table, table)
    expected = model.head(torch.cat([model.image_branch(image), model.tabular_branch(table)], dim=1))
    torch.testing.assert_close(model(x), expected)
    shifted = model.join_inputs(image, table + 1)  # only the table changes: only the tabular branch sees it
    assert not torch.allclose(model(shifted), model(x))
    with pytest.raises(ValueError, match=r"expects images \(B, 1, 8, 8\) and tabular features \(B, 8\)"):
        model.join_inputs(torch.randn(3, 1, 7, 7), table)
    with pytest.raises(ValueError, match="in_features=64 leaves no tabular feature after the 64 pixels"):
        zoo.ImageTabularRegressor(in_features=64, image_shape=(1, 8, 8))


# --- the C++ operator ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extension() -> None:
    """``zoo::swish`` built (or loaded from the cache). Skipped, with the reason, where a build tool is missing; a
    build that fails with the tools present fails the test."""
    missing = custom_op.missing_tools()
    if missing:
        pytest.skip(f"zoo::swish cannot be built here: missing {' and '.join(missing)}")
    custom_op.load_extension()


@pytest.mark.slow  # the first build compiles for about 30-45 s on 2 cores; later runs load the cached library
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_cpp_swish_equals_its_pytorch_twin(extension, dtype):
    tol = TOLERANCES[dtype] if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-6}
    for beta in (1.0, 0.5, 2.0):
        x = torch.randn(6, 70, dtype=dtype).t().requires_grad_()  # non-contiguous, several parallel chunks
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = torch.ops.zoo.swish(x, beta), custom_op.swish_reference(x_ref, beta)
        torch.testing.assert_close(y, y_ref, **tol)
        grad_output = torch.randn_like(y)
        y.backward(grad_output), y_ref.backward(grad_output)
        torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x: torch.ops.zoo.swish(x, 1.5), (x,))
    torch.testing.assert_close(custom_op.fused_swish(x, 1.5), custom_op.swish_reference(x, 1.5), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_cpp_swish_registrations_pass_opcheck(extension):
    """Schema, fake kernel and autograd registration, as torch.library checks them."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    results = torch.library.opcheck(torch.ops.zoo.swish.default, (x, 1.5))
    assert set(results.values()) == {"SUCCESS"}
    torch.library.opcheck(torch.ops.zoo.swish_backward.default, (torch.randn(4, 3), torch.randn(4, 3), 1.5))


@pytest.mark.slow
def test_cpp_swish_compiles_in_one_graph(extension):
    def function(x: torch.Tensor) -> torch.Tensor:
        return custom_op.fused_swish(2 * x + 1, beta=1.5).sum(dim=-1)

    compiled = torch.compile(function, fullgraph=True)  # fails on any graph break, e.g. a missing fake kernel
    x = torch.randn(5, 7, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = compiled(x), function(x_ref)
    torch.testing.assert_close(y, y_ref)
    y.sum().backward(), y_ref.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_fused_swish_falls_back_with_one_warning_naming_what_is_missing(monkeypatch):
    monkeypatch.setattr(custom_op, "_status", custom_op._NOT_TRIED)  # as in a fresh process
    monkeypatch.setattr(custom_op, "_warned", False)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(custom_op, "_ninja_dir", lambda: None)
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.warns(UserWarning, match=r"missing a C\+\+ compiler \('/nonexistent/c\+\+' is not on PATH") as record:
        y = custom_op.fused_swish(x, 0.7)
    assert "the ninja build tool (pip install ninja)" in str(record[0].message)
    assert "uses its PyTorch twin swish_reference" in str(record[0].message)
    torch.testing.assert_close(y, custom_op.swish_reference(x, 0.7))
    y.sum().backward()  # differentiable on the fallback path too
    assert x.grad is not None
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        custom_op.fused_swish(x, 0.7)
    assert again == []  # warned once per process
    with pytest.raises(custom_op.ExtensionUnavailable, match="ninja"):
        custom_op.load_extension()


def test_importing_the_module_builds_nothing(monkeypatch):
    """The build runs on first use only: executing the module's code afresh calls no compiler."""
    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda *args, **kwargs: calls.append(args))
    spec = importlib.util.spec_from_file_location("fresh_custom_op", custom_op.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh._status == fresh._NOT_TRIED and calls == []
