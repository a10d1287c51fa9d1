"""Property tests: on any small network or input, a finite right answer or a documented error.

Hypothesis builds random architectures, batch sizes and data. Either the result is
finite and ``gradcheck`` holds, or one of the errors of docs/reliability.md comes
back; never anything else. ``event`` records which, for ``--hypothesis-show-statistics``.
"""

from __future__ import annotations

import torch
from hypothesis import event, given
from hypothesis import strategies as st

from nograd.data import TensorDataset
from nograd.gradcheck import gradcheck
from nograd.nn import Linear, Module, Sequential, activations
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.dropout import Dropout
from nograd.nn.log_softmax import LogSoftmax
from nograd.nn.smooth_activations import SiLU, Softplus
from nograd.optim import Adam
from nograd.train import fit

LAYERS = [
    activations.ReLU, activations.Tanh, activations.Sigmoid, activations.GELU,
    activations.ELU, activations.LeakyReLU, activations.Identity, SiLU, Softplus,
    lambda: activations.Softmax(dim=-1), lambda: LogSoftmax(dim=-1), lambda: Dropout(0.3),
]  # fmt: skip


@st.composite
def architectures(draw: st.DrawFn) -> tuple[Module, int]:
    """A random Sequential; a Linear may take the wrong width, a documented mistake."""
    width = first = draw(st.integers(1, 4))
    layers: list[Module] = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            wrong = draw(st.sampled_from([False] * 9 + [True]))
            in_features = width + 1 if wrong else width
            width = draw(st.integers(1, 4))
            layers.append(Linear(in_features, width, bias=draw(st.booleans())))
        else:
            layers.append(draw(st.sampled_from(LAYERS))())
    return Sequential(*layers), first


@given(
    architectures(),
    st.integers(1, 5),
    st.integers(-3, 3),
    st.sampled_from([torch.float64, torch.float64, torch.float64, torch.float32]),
    st.integers(0, 2**31),
)
def test_any_small_network_is_finite_and_right_or_says_what_is_wrong(
    arch: tuple[Module, int], batch: int, scale: int, dtype: torch.dtype, seed: int
) -> None:
    model, width = arch
    model.to(torch.float64)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed)) * 10.0**scale
    try:
        y = model(x.to(dtype))
    except (ValueError, TypeError) as error:  # the documented mistakes: width, dtype
        message = str(error)
        assert message.startswith("Linear(in_features=") and "expected input of" in message
        kind = message.split("expected input of ")[1][:5]  # "shape" or "dtype"
        event(f"{type(error).__name__}: expected input of {kind}")
        return
    assert torch.isfinite(y).all()
    # the step shrinks with the inputs, so that a central difference does not straddle a
    # kink (ReLU's at 0) that an input of 1e-3 lies within 1e-6 of
    result = gradcheck(model, x, eps=1e-6 * 10.0 ** min(scale, 0))
    assert result.ok, str(result)
    event("finite, and gradcheck holds")


@given(
    n=st.integers(0, 12),
    features=st.sampled_from([2, 2, 2, 3]),
    batch_size=st.integers(-1, 16),
    poison=st.sampled_from([None, None, float("nan"), float("inf")]),
    top_label=st.sampled_from([1, 1, 2]),
    seed=st.integers(0, 2**31),
)
def test_fit_on_any_small_input_trains_finitely_or_says_what_is_wrong(
    n: int, features: int, batch_size: int, poison: float | None, top_label: int, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    if poison is not None and n:
        x[n // 2, 0] = poison
    y = torch.randint(0, top_label + 1, (n,), generator=g)
    torch.manual_seed(seed)
    model = Sequential(Linear(2, 4), activations.Tanh(), Linear(4, 2))
    try:
        history = fit(
            model, CrossEntropyLoss(), Adam(model.parameters(), lr=0.01), TensorDataset(x, y),
            epochs=2, batch_size=batch_size, progress=False, generator=g,
        )  # fmt: skip
    except (ValueError, TypeError) as error:  # documented: batch_size, empty, nan, features, labels
        assert str(error).startswith("fit:"), str(error)
        event(str(error)[:28])
        return
    assert all(torch.isfinite(torch.tensor(values)).all() for values in history.to_dict().values())
    assert all(torch.isfinite(p.data).all() for p in model.parameters())
    event("trained, finite")
