from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
import torch

from nograd.data import (
    DataLoader,
    IterableDataset,
    TensorDataset,
    default_collate,
    disk,
    xor,
)
from nograd.data_checks import may_hold_ignored
from nograd.nn import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    Linear,
    LogSoftmax,
    Loss,
    Module,
    MSELoss,
    NLLLoss,
    Sequential,
    SmoothL1Loss,
)
from nograd.nn.activations import ReLU, Sigmoid, Tanh
from nograd.optim import SGD, Adam, AdamW
from nograd.optim.lr_scheduler import CosineAnnealingLR
from nograd.targets import one_hot, predict_classes, skipped_by, target_for
from nograd.train import History, evaluate, fit
from tests.oracle import assert_close
from tests.streams import BatchedStream


def small_net(outputs: int = 2, dtype: torch.dtype = torch.float32) -> Sequential:
    return Sequential(Linear(2, 8), Tanh(), Linear(8, 8), ReLU(), Linear(8, outputs)).to(
        dtype=dtype
    )


def fit_once(model: Module, train_data: Any, test_data: Any = None, **options: Any) -> History:
    """``fit`` as most tests here call it: cross-entropy, SGD at lr 0.1, one epoch, no bar."""
    options = {"epochs": 1, "progress": False, **options}
    optimizer = SGD(model.parameters(), lr=0.1)
    return fit(model, CrossEntropyLoss(), optimizer, train_data, test_data, **options)


def test_fit_returns_one_entry_per_epoch() -> None:
    g = torch.Generator().manual_seed(0)
    model = small_net()
    history = fit(
        model, CrossEntropyLoss(), Adam(model.parameters(), lr=1e-2), disk(50, g), disk(30, g),
        epochs=3, batch_size=16, generator=g, progress=False,
    )  # fmt: skip
    assert isinstance(history, History)
    lists = history.to_dict()
    assert set(lists) >= {"train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    assert all(len(values) == 3 for values in lists.values())
    assert all(0 <= acc <= 1 for acc in history.train_acc + history.test_acc)


def test_fit_without_test_data_leaves_test_lists_empty() -> None:
    model = small_net()
    history = fit_once(model, disk(20), epochs=2)
    assert len(history.train_loss) == 2 and history.test_loss == [] and history.test_acc == []


def test_training_reduces_the_loss_on_xor() -> None:
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = small_net()
    history = fit(
        model, CrossEntropyLoss(), Adam(model.parameters(), lr=2e-2), xor(200, generator=g),
        epochs=30, batch_size=20, generator=g, progress=False,
    )  # fmt: skip
    assert history.train_loss[-1] < 0.2 * history.train_loss[0]
    assert history.train_acc[-1] > 0.95


def test_bce_on_probabilities_trains_a_sigmoid_network_on_xor() -> None:
    """BCELoss takes the Sigmoid's probabilities: y as (N, 1) floats, class 1 above 0.5."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = Sequential(Linear(2, 16), Tanh(), Linear(16, 1), Sigmoid())
    history = fit(
        model, BCELoss(), Adam(model.parameters(), lr=2e-2), xor(200, generator=g),
        epochs=30, batch_size=20, generator=g, progress=False,
    )  # fmt: skip
    assert history.train_loss[-1] < 0.2 * history.train_loss[0]
    assert history.train_acc[-1] > 0.95
    assert torch.equal(
        predict_classes(torch.tensor([[0.4], [0.6]]), BCELoss()), torch.tensor([0, 1])
    )


@pytest.mark.parametrize("loss_fn", [HuberLoss(), SmoothL1Loss(beta=0.5)], ids=repr)
def test_the_robust_regression_losses_target_one_hot_rows_as_mse(loss_fn: Loss) -> None:
    y = torch.tensor([1, 0, 2])
    for n_outputs in (1, 3):
        ours, mse = (
            target_for(loss_fn, n_outputs, torch.float64),
            target_for(MSELoss(), n_outputs, torch.float64),
        )
        assert ours is not None and mse is not None and torch.equal(ours(y), mse(y))
    one_output = torch.tensor([[0.4], [0.6]])
    assert torch.equal(predict_classes(one_output, loss_fn), torch.tensor([0, 1]))


def test_progress_false_prints_nothing_and_true_draws_a_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = disk(40, torch.Generator().manual_seed(2))
    model = small_net()
    fit(
        model,
        CrossEntropyLoss(),
        SGD(model.parameters(), lr=0.1),
        data,
        data,
        epochs=2,
        progress=False,
    )
    assert capsys.readouterr() == ("", "")
    fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), data, epochs=2, progress=True)
    assert "epoch" in capsys.readouterr().err


def _identity_classifier() -> Linear:
    layer = Linear(2, 2)
    layer.weight.data.copy_(torch.eye(2))
    assert layer.bias is not None
    layer.bias.data.zero_()
    return layer


def test_evaluate_on_a_hand_made_case() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1, 1])  # the third point is misclassified: argmax is 0
    loss, accuracy = evaluate(
        _identity_classifier(), CrossEntropyLoss(), TensorDataset(x, y), batch_size=3
    )
    expected_loss = (
        sum(
            math.log(math.exp(a) + math.exp(b)) - (a, b)[label]
            for (a, b), label in zip(x.tolist(), y.tolist(), strict=True)
        )
        / 4
    )
    assert accuracy == 0.75
    assert loss == pytest.approx(expected_loss, rel=1e-6)


def test_evaluate_single_output_uses_the_sign_of_the_logit() -> None:
    layer = Linear(2, 1)
    layer.weight.data.copy_(torch.tensor([[1.0, -1.0]]))
    assert layer.bias is not None
    layer.bias.data.zero_()
    x = torch.tensor([[2.0, 1.0], [1.0, 2.0], [3.0, 0.0], [0.0, 1.0], [5.0, 4.0]])
    y = torch.tensor([1, 0, 0, 0, 1])  # logits 1, -1, 3, -1, 1: the third is wrong
    _, accuracy = evaluate(layer, BCEWithLogitsLoss(), TensorDataset(x, y))
    assert accuracy == 0.8


def test_evaluate_restores_the_training_mode() -> None:
    model = small_net()
    model.train()
    evaluate(model, CrossEntropyLoss(), disk(10))
    assert model.training
    model.eval()
    evaluate(model, CrossEntropyLoss(), disk(10))
    assert not model.training


class FailsOnItsSecondBatch(Module):
    """An identity on 2 features whose forward raises the second time it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("the second batch")
        return x


def test_evaluate_restores_the_training_mode_when_the_forward_raises() -> None:
    model = Sequential(Linear(2, 2), FailsOnItsSecondBatch()).train()
    with pytest.raises(RuntimeError, match="the second batch"):
        evaluate(model, CrossEntropyLoss(), disk(10), batch_size=4)
    assert model.training and all(module.training for module in model.modules())


def test_targets_follow_the_loss() -> None:
    y = torch.tensor([1, 0, 1])
    assert target_for(CrossEntropyLoss(), 2, torch.float32) is None
    mse = target_for(MSELoss(), 2, torch.float64)
    assert mse is not None
    assert torch.equal(
        mse(y), torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    )
    bce = target_for(BCEWithLogitsLoss(), 1, torch.float32)
    assert bce is not None
    assert torch.equal(bce(y), torch.tensor([[1.0], [0.0], [1.0]]))
    assert torch.equal(
        one_hot(torch.tensor([2]), 3, torch.float32), torch.tensor([[0.0, 0.0, 1.0]])
    )
    assert torch.equal(
        predict_classes(torch.tensor([[0.2], [0.7]]), MSELoss()), torch.tensor([0, 1])
    )
    assert torch.equal(predict_classes(torch.tensor([[-0.2], [0.3]])), torch.tensor([0, 1]))


@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_hot_is_torchs(label_dtype: torch.dtype, dtype: torch.dtype) -> None:
    y = torch.tensor([1, 0, 1, 1]).to(label_dtype)
    expected = F.one_hot(y.long(), 3).to(dtype)
    assert torch.equal(one_hot(y, 3, dtype), expected)


@pytest.mark.parametrize("label", [-1, 3])
def test_one_hot_refuses_a_label_out_of_range_as_torchs(label: int) -> None:
    y = torch.tensor([0, label, 2])
    with pytest.raises(RuntimeError):
        F.one_hot(y, 3)  # torch refuses it too
    with pytest.raises(ValueError, match=rf"expected class labels in 0..2 .* \[{min(label, 0)}, "):
        one_hot(y, 3, torch.float32)


def torch_step(
    twin: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the torch loop fit is compared with; its output and loss."""
    optimizer.zero_grad()
    with torch.enable_grad():
        output = twin(x)
        loss = loss_fn(output, y)
        loss.backward()
    optimizer.step()
    return output, loss


def torch_epoch_over_kept(
    twin: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[float, float]:
    """An epoch of the torch loop over (x, target, labels, kept) batches: its mean loss
    and accuracy over the kept samples (those the loss does not skip), as fit counts."""
    loss_sum = hits = count = 0.0
    for x, target, labels, kept in batches:
        output, loss = torch_step(twin, loss_fn, optimizer, x, target)
        loss_sum += float(loss) * int(kept.sum())
        hits += int(((output.argmax(1) == labels) & kept).sum())
        count += int(kept.sum())
    return loss_sum / count, hits / count


class Records:
    """The samples of a TensorDataset one by one: a dataset fit cannot read ahead."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return self.data[index]


@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("generic", [False, True])
def test_fit_with_ignored_labels_is_a_torch_loop_and_counts_only_the_rest(
    ignore_index: int, generic: bool
) -> None:
    """Samples whose label is the loss's ignore_index train as in torch's loop (the loss
    skips them) and count for nothing in fit's loss and accuracy, or in evaluate's. A
    batch of ignored samples only (the third) has torch's loss 0 / 0 = nan: no
    divergence, and its step is torch's (zero gradients, momentum still moves)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(12, 2, generator=generator)
    y = torch.tensor([0, 2, ignore_index, 1, ignore_index, ignore_index, 2, 0, 1, 2, 0, 1])
    torch.manual_seed(0)
    ours = Sequential(Linear(2, 8), Tanh(), Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin.load_state_dict(ours.state_dict())
    data = TensorDataset(x, y)
    history = fit(ours, CrossEntropyLoss(ignore_index=ignore_index),
                  SGD(ours.parameters(), lr=0.5, momentum=0.9), Records(data) if generic else data,
                  data, epochs=2, batch_size=2, shuffle=False, progress=False)  # fmt: skip

    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9)
    kept = y != ignore_index
    for epoch in range(2):
        loss_sum = hits = 0.0
        for start in range(0, 12, 2):
            xb, yb, keep = x[start : start + 2], y[start : start + 2], kept[start : start + 2]
            output, loss = torch_step(twin, loss_fn, optimizer, xb, yb)
            if keep.any():
                loss_sum += float(loss) * int(keep.sum())
                hits += int(((output.argmax(1) == yb) & keep).sum())
        count = int(kept.sum())  # float32 losses, summed in another order: not to the bit
        assert math.isclose(history.train_loss[epoch], loss_sum / count, rel_tol=1e-6)
        assert history.train_acc[epoch] == hits / count
    for key, value in twin.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key

    with torch.no_grad():
        output = twin(x)
    test_loss = float(loss_fn(output, y))
    test_acc = int(((output.argmax(1) == y) & kept).sum()) / int(kept.sum())
    assert math.isclose(history.test_loss[-1], test_loss, rel_tol=1e-6)
    assert history.test_acc[-1] == test_acc
    assert evaluate(ours, CrossEntropyLoss(ignore_index=ignore_index), data) == (
        history.test_loss[-1],
        history.test_acc[-1],
    )


def test_ignored_labels_may_lie_outside_the_classes_but_not_fill_the_data() -> None:
    x, y = torch.rand(6, 2), torch.tensor([0, 1, -100, 1, 0, -100])
    torch.manual_seed(0)
    model = Sequential(Linear(2, 2))
    fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), TensorDataset(x, y),
        epochs=1, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"model has 2 output\(s\), which fit classes 0..1$"):
        evaluate(model, CrossEntropyLoss(ignore_index=7), TensorDataset(x, y))
    every = TensorDataset(x, torch.full((6,), 4))
    with pytest.raises(
        ValueError, match=r"every label equals CrossEntropyLoss's ignore_index \(4\)"
    ):
        fit(model, CrossEntropyLoss(ignore_index=4), SGD(model.parameters(), lr=0.1), every,
            epochs=1, progress=False)  # fmt: skip


def three_class_twins(
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, Sequential, torch.nn.Sequential]:
    """12 random points with labels in 0..2, and a small net with its torch twin, which
    starts from the same weights."""
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.rand(12, 2, generator=generator), torch.randint(0, 3, (12,), generator=generator)
    torch.manual_seed(0)
    ours = Sequential(Linear(2, 8), Tanh(), Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin.load_state_dict(ours.state_dict())
    return x, y, ours, twin


def test_fit_counts_only_the_samples_a_collate_fn_leaves_to_the_loss() -> None:
    """A collate_fn may mark labels as ignored (as masking collators do) in a dataset
    whose own labels hold none: fit's accuracy and loss count the rest, as the loss."""

    def mask_every_other_label(samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = default_collate(samples)
        return x, y.masked_fill(torch.arange(len(y)) % 2 == 0, -100)

    x, y, ours, twin = three_class_twins(seed=4)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, collate_fn=mask_every_other_label)
    history = fit(ours, CrossEntropyLoss(), SGD(ours.parameters(), lr=0.5), loader, epochs=1,
                  progress=False)  # fmt: skip

    loss_fn, optimizer = torch.nn.CrossEntropyLoss(), torch.optim.SGD(twin.parameters(), lr=0.5)
    batches = []
    for start in range(0, 12, 4):
        xb, yb = mask_every_other_label([(x[i], y[i]) for i in range(start, start + 4)])
        batches.append((xb, yb, yb, yb != -100))
    loss, accuracy = torch_epoch_over_kept(twin, loss_fn, optimizer, batches)
    assert math.isclose(history.train_loss[0], loss, rel_tol=1e-6)
    assert history.train_acc[0] == accuracy
    for key, value in twin.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


@pytest.mark.parametrize("loss", ["cross_entropy", "smoothed", "nll"])
@pytest.mark.parametrize("generic", [False, True])
def test_class_weights_weigh_each_batch_as_torchs_weighted_mean(loss: str, generic: bool) -> None:
    """With class weights w the loss of a batch is sum_i w_{y_i} l_i / sum_i w_{y_i} over
    the samples counted: fit and evaluate weigh each batch by its sum_i w_{y_i}, so the
    epoch's loss is torch's over the epoch's samples, and evaluate's is torch's over all
    the data, whatever the batch size. The steps are torch's bits, ignored labels and an
    all-ignored batch included."""
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(15, 2, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (15,), generator=generator)
    y[[1, 7, 8, 9, 13]] = -100  # the third batch of three holds ignored samples only
    w = torch.tensor([0.5, 4.0, 1.5], dtype=torch.float64)
    torch.manual_seed(0)
    ours = Sequential(Linear(2, 8), Tanh(), Linear(8, 3)).to(dtype=torch.float64)
    twin = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin = twin.to(dtype=torch.float64)
    twin.load_state_dict(ours.state_dict())
    if loss == "nll":
        ours.append(LogSoftmax(dim=1))
        twin.append(torch.nn.LogSoftmax(dim=1))
        loss_ours, loss_fn = NLLLoss(weight=w), torch.nn.NLLLoss(weight=w)
    else:
        smoothing = 0.2 if loss == "smoothed" else 0.0
        loss_ours = CrossEntropyLoss(weight=w, label_smoothing=smoothing)
        loss_fn = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=smoothing)
    data = TensorDataset(x, y)
    history = fit(ours, loss_ours, SGD(ours.parameters(), lr=0.5, momentum=0.9),
                  Records(data) if generic else data, epochs=2, batch_size=3, shuffle=False,
                  progress=False)  # fmt: skip

    optimizer = torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9)
    for epoch in range(2):
        loss_sum = weight_sum = 0.0
        for start in range(0, 15, 3):
            xb, yb = x[start : start + 3], y[start : start + 3]
            _, loss = torch_step(twin, loss_fn, optimizer, xb, yb)
            kept = yb != -100
            if kept.any():
                weighs = float(w[yb[kept]].sum())  # the denominator of the batch's mean
                loss_sum += float(loss) * weighs
                weight_sum += weighs
        assert math.isclose(history.train_loss[epoch], loss_sum / weight_sum, rel_tol=1e-12)
    for key, value in twin.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key

    with torch.no_grad():
        expected = float(loss_fn(twin(x), y))  # the weighted mean over all the data
    for batch_size in (1024, 4, 1):
        test_loss, _ = evaluate(ours, loss_ours, data, batch_size=batch_size)
        assert math.isclose(test_loss, expected, rel_tol=1e-12), batch_size


def test_a_target_transform_decides_which_samples_the_loss_and_accuracy_count() -> None:
    """A target_transform may mark samples as ignored (here every label 2) in a dataset
    whose labels hold none: the samples the loss skips are those of its targets, and fit
    and evaluate count the rest only, in the loss and the accuracy."""

    def drop_class_2(y: torch.Tensor) -> torch.Tensor:
        return y.masked_fill(y == 2, -100)

    x, y, ours, twin = three_class_twins(seed=6)
    data = TensorDataset(x, y)
    history = fit(ours, CrossEntropyLoss(), SGD(ours.parameters(), lr=0.5), data, data,
                  epochs=1, batch_size=4, shuffle=False, target_transform=drop_class_2,
                  progress=False)  # fmt: skip

    loss_fn, optimizer = torch.nn.CrossEntropyLoss(), torch.optim.SGD(twin.parameters(), lr=0.5)
    batches = []
    for start in range(0, 12, 4):
        xb, yb = x[start : start + 4], y[start : start + 4]
        batches.append((xb, drop_class_2(yb), yb, yb != 2))
    loss, accuracy = torch_epoch_over_kept(twin, loss_fn, optimizer, batches)
    assert math.isclose(history.train_loss[0], loss, rel_tol=1e-6)
    assert history.train_acc[0] == accuracy
    for key, value in twin.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key

    with torch.no_grad():
        output = twin(x)
    kept = y != 2
    assert math.isclose(history.test_loss[0], float(loss_fn(output, drop_class_2(y))),
                        rel_tol=1e-6)  # fmt: skip
    assert history.test_acc[0] == int(((output.argmax(1) == y) & kept).sum()) / int(kept.sum())


def test_probability_targets_from_a_transform_take_the_batch_mean_despite_class_weights() -> None:
    """With class probabilities as targets torch's weighted cross-entropy is a plain mean
    over the batch (sum_i of w-weighted terms / N) and skips no sample: fit and evaluate
    weigh each batch by its size, so evaluate gives torch's loss over all the data, and
    every sample counts in the accuracy."""
    w = torch.tensor([0.5, 4.0, 1.5], dtype=torch.float64)

    def smoothed(y: torch.Tensor) -> torch.Tensor:
        return one_hot(y, 3, torch.float64) * 0.9 + 0.1 / 3

    generator = torch.Generator().manual_seed(7)
    x = torch.rand(10, 2, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=generator)
    torch.manual_seed(0)
    ours = Sequential(Linear(2, 8), Tanh(), Linear(8, 3)).to(dtype=torch.float64)
    twin = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin = twin.to(dtype=torch.float64)
    twin.load_state_dict(ours.state_dict())
    data = TensorDataset(x, y)
    history = fit(ours, CrossEntropyLoss(weight=w), SGD(ours.parameters(), lr=0.5), data,
                  epochs=1, batch_size=4, shuffle=False, target_transform=smoothed,
                  progress=False)  # fmt: skip

    loss_fn = torch.nn.CrossEntropyLoss(weight=w)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.5)
    loss_sum = 0.0
    for start in range(0, 10, 4):
        xb, yb = x[start : start + 4], y[start : start + 4]
        _, loss = torch_step(twin, loss_fn, optimizer, xb, smoothed(yb))
        loss_sum += float(loss) * len(yb)
    assert math.isclose(history.train_loss[0], loss_sum / 10, rel_tol=1e-12)

    with torch.no_grad():
        output = twin(x)
    expected = float(loss_fn(output, smoothed(y)))
    accuracy = int((output.argmax(1) == y).sum()) / 10
    for batch_size in (1024, 4, 1):
        assert evaluate(ours, CrossEntropyLoss(weight=w), data, batch_size=batch_size,
                        target_transform=smoothed) == pytest.approx((expected, accuracy),
                                                                    rel=1e-12)  # fmt: skip


def test_uint8_labels_are_compared_with_ignore_index_as_the_loss_compares_them() -> None:
    """As uint8, -100 wraps round to 156 (``uint8_tensor == -100`` holds for 156). The
    loss reads labels as int64, where 156 is a class like any other: fit and evaluate
    count those samples too, and no sample is taken for an ignored one."""
    labels = torch.tensor([156, 3, 156, 159, 0, 156], dtype=torch.uint8)
    assert bool((labels == -100).any())  # the trap
    skipped = skipped_by(labels, -100)
    assert skipped is not None and not bool(skipped.any())
    assert may_hold_ignored(DataLoader(TensorDataset(torch.rand(6, 2), labels)),
                            CrossEntropyLoss(), None) is None  # fmt: skip

    generator = torch.Generator().manual_seed(8)
    x = torch.rand(6, 2, generator=generator, dtype=torch.float64)
    torch.manual_seed(0)
    ours = Sequential(Linear(2, 160)).to(dtype=torch.float64)
    ours[0].bias.data[156] = 3.0  # so some predictions hit class 156
    twin = torch.nn.Linear(2, 160).to(dtype=torch.float64)
    twin.load_state_dict({k.removeprefix("0."): v for k, v in ours.state_dict().items()})
    data = TensorDataset(x, labels)
    loss_ours = CrossEntropyLoss()
    with torch.no_grad():
        output = twin(x)
    expected_loss = float(torch.nn.functional.cross_entropy(output, labels.long()))
    expected_acc = int((output.argmax(1) == labels.long()).sum()) / 6
    assert 0 < expected_acc < 1
    test_loss, test_acc = evaluate(ours, loss_ours, data)
    assert math.isclose(test_loss, expected_loss, rel_tol=1e-12)
    assert test_acc == expected_acc
    history = fit(ours, loss_ours, SGD(ours.parameters(), lr=0.0), data, epochs=1,
                  batch_size=4, shuffle=False, progress=False)  # fmt: skip
    assert math.isclose(history.train_loss[0], expected_loss, rel_tol=1e-12)
    assert history.train_acc[0] == expected_acc


def reading(data: TensorDataset, reader: str, batch_size: int) -> tuple[Any, Any]:
    """The data as ``reader`` reads them, and a plain DataLoader that gives the same
    batches: in order for a stream, shuffled by the same generator for the others."""
    if reader == "stream":  # batched by fit
        return BatchedStream(data, batch_size), DataLoader(data, batch_size)
    if reader.startswith("stream_"):
        workers = 2 if reader == "stream_workers" else 0
        stream = DataLoader(BatchedStream(data, batch_size), batch_size, num_workers=workers)
        return stream, DataLoader(data, batch_size)
    shuffled = {"batch_size": batch_size, "shuffle": True}
    plain = DataLoader(data, **shuffled, generator=torch.Generator().manual_seed(1))
    if reader == "workers":
        return DataLoader(data, **shuffled, generator=torch.Generator().manual_seed(1),
                          num_workers=2), plain  # fmt: skip
    return DataLoader(data, **shuffled, generator=torch.Generator().manual_seed(1),
                      pin_memory=True), plain  # fmt: skip


@pytest.mark.parametrize(
    "reader", ["stream", "stream_loader", "stream_workers", "workers", "pinned"]
)
def test_fit_over_streams_and_worker_loaders_trains_as_over_the_dataset(reader: str) -> None:
    """The same samples in the same batches give the same run, to the bit: from an
    IterableDataset (given to fit, or in a DataLoader, read by 0 or 2 workers), from a
    DataLoader whose worker processes read a shuffled TensorDataset (its order comes
    from the same generator), or from one asked to pin its batches (on a machine
    without a GPU it warns and does not)."""
    data = disk(50, generator=torch.Generator().manual_seed(9))
    runs = []
    for train in reading(data, reader, batch_size=8):
        torch.manual_seed(0)
        model = Sequential(Linear(2, 8), Tanh(), Linear(8, 2))
        optimizer = Adam(model.parameters(), lr=0.01)
        options: dict[str, Any] = {"batch_size": 8} if isinstance(train, BatchedStream) else {}
        pins = getattr(train, "pin_memory", False) and not torch.cuda.is_available()
        with pytest.warns(UserWarning, match="no GPU") if pins else contextlib.nullcontext():
            history = fit(model, CrossEntropyLoss(), optimizer, train, data, epochs=3,
                          progress=False, **options)  # fmt: skip
        runs.append((model.state_dict(), history.to_dict()))
    (state, history), (state_other, history_other) = runs
    for key, value in state.items():
        assert torch.equal(value, state_other[key]), key
    del history["seconds"], history_other["seconds"]
    assert history == history_other


def test_fit_refuses_an_empty_stream() -> None:
    class Empty(IterableDataset[Any]):
        def __iter__(self) -> Any:
            return iter([])

    model = small_net()
    with pytest.raises(ValueError, match="fit: train_data is empty: its stream yields no sample"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), Empty(), epochs=1,
            progress=False)  # fmt: skip


class NumpyLabels:
    """Inputs as tensors, labels as numpy integers: what torch's DataLoader collates."""

    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.tensors[0], data.tensors[1].numpy()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        return self.x[index], self.y[index]


def test_fit_takes_numpy_labels_as_the_collation_does() -> None:
    """A dataset whose labels are numpy integers (-100 among them) trains as one of tensors."""
    generator = torch.Generator().manual_seed(6)
    x, y = torch.rand(10, 2, generator=generator), torch.randint(0, 2, (10,), generator=generator)
    data = TensorDataset(x, y.masked_fill(torch.arange(10) % 4 == 0, -100))
    models, histories = [], []
    for dataset in (Records(data), NumpyLabels(data)):
        torch.manual_seed(0)
        model = small_net()
        histories.append(fit_once(model, dataset, batch_size=3, shuffle=False).to_dict())
        models.append(model)
    del histories[0]["seconds"], histories[1]["seconds"]
    assert histories[0] == histories[1]
    for key, value in models[0].state_dict().items():
        assert torch.equal(models[1].state_dict()[key], value), key


class NoisyPairs:
    """Fixed points plus fresh noise at every read, as data augmentation draws it."""

    def __init__(self, n: int) -> None:
        self.x = torch.rand(n, 2, generator=torch.Generator().manual_seed(3))
        self.y = (self.x.sum(1) > 1).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.1 * torch.randn(2), self.y[i]


def test_fit_draws_what_a_hand_written_loop_draws_from_a_noisy_dataset() -> None:
    """fit reads a sample ahead to check the data, and puts the random state back: the
    training then sees the noise a loop over the same DataLoader sees."""
    data = NoisyPairs(12)

    def train(with_fit: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = Sequential(Linear(2, 2))
        optimizer, loss_fn = SGD(model.parameters(), lr=0.5), CrossEntropyLoss()
        if with_fit:
            fit(model, loss_fn, optimizer, data, epochs=2, batch_size=4, progress=False)
            return model.state_dict()
        for _ in range(2):
            for x, y in DataLoader(data, 4, shuffle=True):
                optimizer.zero_grad()
                loss_fn(model(x), y)
                model.backward(loss_fn.backward())
                optimizer.step()
        return model.state_dict()

    ours, loop = train(with_fit=True), train(with_fit=False)
    assert all(torch.equal(ours[key], loop[key]) for key in loop)


def test_fit_refuses_labels_the_model_cannot_output_in_a_dataset_of_pairs() -> None:
    """Only the first pair's label is checked before training: the one-hot target of each
    batch refuses the others, where a row of zeros would train MSE towards nothing."""
    pairs = [(torch.rand(2), torch.tensor(label)) for label in (0, 1, 3, 0)]
    torch.manual_seed(0)
    model = Sequential(Linear(2, 2))
    optimizer = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"class labels in 0..1 .* \[0, 3\]"):
        fit(model, MSELoss(), optimizer, pairs, epochs=1, batch_size=4, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2, "batch_size": 0}, "batch_size"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": 2, "test_batch_size": 0}, "test_batch_size"),
        ({"epochs": 2, "clip_grad_norm": 0.0}, "clip_grad_norm must be a positive number"),
        ({"epochs": 2, "clip_grad_norm": float("inf")}, "clip_grad_norm must be a positive"),
        ({"epochs": 2, "clip_grad_norm": "1"}, "clip_grad_norm must be a positive number"),
    ],
)
def test_fit_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    model = small_net()
    with pytest.raises(ValueError, match=message):
        fit_once(model, disk(10), **kwargs)


def test_fit_names_both_sizes_on_a_feature_mismatch() -> None:
    model = small_net()
    data = TensorDataset(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"has 3 features per sample.*expects 2 features"):
        fit_once(model, data)


def test_fit_rejects_labels_the_model_cannot_output() -> None:
    model = small_net()
    data = TensorDataset(torch.randn(10, 2), torch.arange(10) % 3)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\].*2 output"):
        fit_once(model, data)


def test_fit_rejects_a_summed_loss() -> None:
    model = small_net()
    with pytest.raises(ValueError, match=r"reduction='mean'.*MSELoss"):
        fit(model, MSELoss(reduction="sum"), SGD(model.parameters(), lr=0.1), disk(10), epochs=1)


def test_fit_takes_a_dataloader_but_not_a_second_batch_size() -> None:
    model = small_net()
    loader = DataLoader(disk(30), batch_size=8, shuffle=True)
    optimizer = SGD(model.parameters(), lr=0.1)
    history = fit(model, CrossEntropyLoss(), optimizer, loader, epochs=2, progress=False)
    assert len(history.train_loss) == 2
    with pytest.raises(ValueError, match=r"batch_size=16 disagrees.*batch_size=8"):
        fit(model, CrossEntropyLoss(), optimizer, loader, epochs=1, batch_size=16)


def test_fit_and_evaluate_refuse_a_dataloader_without_batching() -> None:
    model = small_net()
    unbatched = DataLoader(disk(30), batch_size=None)  # yields single samples
    optimizer = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"fit: train_data is a DataLoader without batching"):
        fit(model, CrossEntropyLoss(), optimizer, unbatched, epochs=1)
    with pytest.raises(ValueError, match=r"fit: test_data is a DataLoader without batching"):
        fit(model, CrossEntropyLoss(), optimizer, disk(30), unbatched, epochs=1)
    with pytest.raises(ValueError, match=r"evaluate: .*without batching.*needs batches"):
        evaluate(model, CrossEntropyLoss(), unbatched)


def test_fit_restores_needs_input_grad() -> None:
    model = small_net()
    fit_once(model, disk(10))
    assert model.needs_input_grad


# ---------------------------------------------------------------- the whole-run oracle
def _torch_twin(ours: Module, outputs: int) -> torch.nn.Sequential:
    twin = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, outputs),
    ).to(torch.float64)  # fmt: skip
    twin.load_state_dict(ours.state_dict())
    return twin


F = torch.nn.functional


def _ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, label_smoothing=0.1)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, F.one_hot(y, 2).double())


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, y.double().unsqueeze(1))


CASES = {
    # name: (outputs, our loss, torch's loss of (output, y), our optimizer, torch's, interval)
    "adam+ce+cosine/step": (
        2, lambda: CrossEntropyLoss(label_smoothing=0.1), _ce,
        lambda p: Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2), "step",
    ),
    "sgd+mse+cosine/epoch": (
        2, MSELoss, _mse,
        lambda p: SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "epoch",
    ),
    "adamw+bce": (
        1, BCEWithLogitsLoss, _bce,
        lambda p: AdamW(p, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2), None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_whole_training_run_matches_torch(case: str) -> None:
    outputs, make_loss, torch_loss, make_opt, make_torch_opt, interval = CASES[case]
    epochs, batch_size, seed = 4, 16, 3
    data = disk(70, torch.Generator().manual_seed(seed))  # 70 = 4 batches of 16 + one of 6
    model = small_net(outputs, torch.float64)
    twin = _torch_twin(model, outputs)
    optimizer, torch_optimizer = make_opt(model.parameters()), make_torch_opt(twin.parameters())
    steps = epochs * math.ceil(70 / batch_size) if interval == "step" else epochs
    scheduler = CosineAnnealingLR(optimizer, T_max=steps) if interval else None
    torch_scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=steps)
        if interval
        else None
    )

    loader = DataLoader(
        data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    fit(
        model, make_loss(), optimizer, loader, epochs=epochs, scheduler=scheduler,
        scheduler_interval=interval or "epoch", progress=False,
    )  # fmt: skip

    same_order = DataLoader(
        data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    with torch.enable_grad():
        for _ in range(epochs):
            for x, y in same_order:
                torch_optimizer.zero_grad()
                torch_loss(twin(x.double()), y).backward()
                torch_optimizer.step()
                if torch_scheduler is not None and interval == "step":
                    torch_scheduler.step()
            if torch_scheduler is not None and interval == "epoch":
                torch_scheduler.step()

    ours = model.state_dict()
    for name, value in twin.state_dict().items():
        assert_close(ours[name], value)
    initial = _torch_twin(
        small_net(outputs, torch.float64), outputs
    )  # a fresh draw, not the trained one
    assert not torch.allclose(ours["0.weight"], initial.state_dict()["0.weight"])


def test_fit_with_cuda_graph_needs_a_cuda_device() -> None:
    model = Sequential(Linear(2, 4), ReLU(), Linear(4, 2))
    with pytest.raises(ValueError, match=r"cuda_graph=True needs a CUDA device, got cpu"):
        fit_once(model, disk(64), cuda_graph=True)


class _RecordsMode(Module):
    """y = x; notes whether each forward ran under torch.inference_mode."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(torch.is_inference_mode_enabled())
        return x

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output  # dL/dx = dL/dy


def test_fit_and_evaluate_run_under_inference_mode() -> None:
    """No op of a step pays for autograd's bookkeeping: training runs in inference mode."""
    recorder = _RecordsMode()
    model = Sequential(Linear(2, 8), ReLU(), recorder, Linear(8, 2))
    fit_once(model, disk(40), disk(20), epochs=2, batch_size=10, test_batch_size=10)
    epochs = recorder.modes[2:]  # after the checks of both datasets: 2 x (4 steps + 2 tests)
    assert len(epochs) == 2 * (4 + 2) and all(epochs)
    assert not torch.is_inference_mode_enabled()
    evaluate(model, CrossEntropyLoss(), disk(20))  # on its own, too
    assert recorder.modes[-1] and not torch.is_inference_mode_enabled()


@pytest.mark.parametrize(("test_batch_size", "batches"), [(None, 1), (7, 3)])
def test_fit_measures_test_data_in_its_own_batches(
    test_batch_size: int | None, batches: int
) -> None:
    """Test data is measured in batches of 1024 (or test_batch_size), not batch_size:
    so the last epoch's figures are evaluate()'s to the bit, at a fraction of the calls."""
    recorder = _RecordsMode()
    model = Sequential(Linear(2, 8), ReLU(), recorder, Linear(8, 2))
    options = {} if test_batch_size is None else {"test_batch_size": test_batch_size}
    test = disk(20, generator=torch.Generator().manual_seed(1))
    history = fit_once(model, disk(40), test, batch_size=5, **options)
    assert len(recorder.modes) == 2 + 8 + batches  # the checks, 8 steps, the test batches
    if test_batch_size is None:
        loss, acc = evaluate(model, CrossEntropyLoss(), test)
        assert (history.test_loss[-1], history.test_acc[-1]) == (loss, acc)


@pytest.mark.parametrize("width", [8, 300])  # one flat buffer per group; tensor by tensor
@pytest.mark.parametrize(
    ("optimizer_cls", "options"), [(SGD, {"lr": 0.1, "momentum": 0.9}), (Adam, {"lr": 1e-2})]
)
def test_after_fit_training_goes_on_outside_inference_mode(
    width: int, optimizer_cls: type[SGD] | type[Adam], options: dict[str, Any]
) -> None:
    """Gradients and optimizer state made in fit are normal tensors: they update in place."""
    model = Sequential(Linear(2, width), ReLU(), Linear(width, width), ReLU(), Linear(width, 2))
    optimizer = optimizer_cls(model.parameters(), **options)
    data = disk(40)
    fit(model, CrossEntropyLoss(), optimizer, data, epochs=1, batch_size=20, progress=False)
    tensors = [p.grad for p in model.parameters()] + [
        v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)
    ]
    assert tensors and not any(t is None or t.is_inference() for t in tensors)
    x, y = data.tensors
    loss_fn = CrossEntropyLoss()
    optimizer.zero_grad(set_to_none=False)  # zeroes the gradients in place
    loss_fn(model(x), y)
    model.backward(loss_fn.backward())  # adds into them
    optimizer.step()  # updates the state in place
    assert all(torch.isfinite(p.data).all() for p in model.parameters())


# ------------------------------------------------- the data and settings fit checks
def test_fit_and_evaluate_take_labels_that_are_python_ints() -> None:
    """A dataset's items may be tuples of tensors or numbers, as DataLoader collates them."""
    x, y = disk(40, torch.Generator().manual_seed(0)).tensors
    pairs = [(x[i], int(y[i])) for i in range(40)]
    model = small_net()
    history = fit_once(model, pairs, pairs, batch_size=8)
    assert len(history.train_loss) == 1 and 0 <= history.test_acc[0] <= 1
    loss, acc = evaluate(model, CrossEntropyLoss(), pairs)
    assert (loss, acc) == evaluate(model, CrossEntropyLoss(), TensorDataset(x, y))


ONE_HOT = F.one_hot(torch.arange(10) % 2, 2).float()
LABEL_SHAPES = [
    ("bce-column", BCEWithLogitsLoss, 1, (torch.arange(10) % 2).float().unsqueeze(1), {},
     "got y of shape (10, 1); squeeze it to (N,) with y.squeeze(1)"),
    ("mse-one-hot", MSELoss, 2, ONE_HOT, {},
     "got y of shape (10, 2); for one-hot rows pass y.argmax(1)"),
    ("own-transform", MSELoss, 2, ONE_HOT, {"target_transform": lambda t: t},
     "got y of shape (10, 2); for one-hot rows pass y.argmax(1)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("loss", "outputs", "y", "options", "got"),
    [case[1:] for case in LABEL_SHAPES],
    ids=[case[0] for case in LABEL_SHAPES],
)
def test_labels_not_of_shape_n_are_refused_before_training(
    loss: type[Module], outputs: int, y: torch.Tensor, options: dict[str, Any], got: str
) -> None:
    model = small_net(outputs)
    before = [p.data.clone() for p in model.parameters()]
    expected = "fit: train_data: expected y of shape (N,), one class index per sample (the "
    expected += f"loss's target is made from it), {got}"
    with pytest.raises(ValueError) as info:
        fit(model, loss(), SGD(model.parameters(), lr=0.1), TensorDataset(torch.rand(10, 2), y),
            epochs=1, progress=False, **options)  # fmt: skip
    assert str(info.value) == expected
    assert all(torch.equal(a, p.data) for a, p in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"^evaluate: data: expected y of shape \(N,\)"):
        evaluate(model, loss(), TensorDataset(torch.rand(10, 2), y))  # type: ignore[arg-type]


def test_labels_of_a_dataset_of_pairs_are_checked_per_sample() -> None:
    pairs = [(torch.rand(2), torch.tensor([i % 2])) for i in range(10)]
    with pytest.raises(ValueError, match=r"got samples whose y has shape \(1,\); squeeze"):
        fit_once(small_net(), pairs)


def test_evaluate_rejects_a_summed_loss_as_fit_does() -> None:
    for reduction in ("sum", "none"):
        with pytest.raises(ValueError) as info:
            evaluate(small_net(), CrossEntropyLoss(reduction=reduction), disk(10))
        assert str(info.value) == (
            f"evaluate: expected a loss with reduction='mean', "
            f"got CrossEntropyLoss(reduction='{reduction}')"
        )


_x, _y = torch.rand(10, 2), torch.arange(10) % 2
CONTAINERS = [
    ("a tuple (x, y)", (_x, _y), TypeError,
     "must yield (x, y) pairs, got items of type Tensor; wrap tensors as TensorDataset(x, y)"),
    ("a numpy array", _x.numpy(), TypeError,
     "must yield (x, y) pairs, got items of type ndarray; wrap tensors as TensorDataset(x, y)"),
    ("a list of numbers", [1, 2, 3], TypeError,
     "must yield (x, y) pairs, got items of type int; wrap tensors as TensorDataset(x, y)"),
    ("TensorDataset(x)", TensorDataset(_x), ValueError,
     "must yield (x, y) pairs, got items of 1 element"),
    ("TensorDataset(x, y, w)", TensorDataset(_x, _y, _y), ValueError,
     "must yield (x, y) pairs, got items of 3 elements"),
    ("a torch DataLoader",
     torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_x, _y), batch_size=4), TypeError,
     "must be a dataset (with __len__ and __getitem__, such as TensorDataset) or a "
     "nograd.data.DataLoader, got a torch.utils.data.DataLoader; pass its .dataset instead"),
    ("pairs of lists", [([0.0, 1.0], 0)] * 4, TypeError,
     ": expected each x to be a tensor, got list"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "error", "message"), [c[1:] for c in CONTAINERS], ids=[c[0] for c in CONTAINERS]
)
def test_wrong_data_containers_get_one_clear_error(
    data: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        fit_once(small_net(), data)
    assert str(info.value) == "fit: train_data" + (" " if message[0] != ":" else "") + message
    with pytest.raises(error) as info:
        evaluate(small_net(), CrossEntropyLoss(), data)
    assert str(info.value).startswith("evaluate: data")


def test_a_torch_dataset_of_pairs_trains() -> None:
    x, y = disk(20).tensors
    assert len(fit_once(small_net(), torch.utils.data.TensorDataset(x, y)).train_loss) == 1


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("meta", "fit: device: meta is not a device to compute on (its tensors have shapes but "
         "no data); use cpu or cuda"),
        ("nonsense", "fit: device: unknown device 'nonsense'"),
        pytest.param("mps", "fit: device: mps is not available on this machine",
                     marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="has mps")),
        pytest.param("cuda:7", "fit: device: cuda:7 is not available on this machine",
                     marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason="has cuda:7")),
    ],
)  # fmt: skip
def test_fit_refuses_a_device_it_cannot_compute_on_and_leaves_the_model(
    device: str, message: str
) -> None:
    model = small_net()
    with pytest.raises(ValueError) as info:
        fit_once(model, disk(10), device=device)
    assert str(info.value) == message and info.value.__cause__ is None
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_fit_and_evaluate_refuse_a_model_on_meta() -> None:
    model = small_net().to("meta")
    with pytest.raises(ValueError, match=r"^fit: the model's device: meta is not a device"):
        fit_once(model, disk(10))
    with pytest.raises(ValueError, match=r"^evaluate: the model's device: meta is not a device"):
        evaluate(model, CrossEntropyLoss(), disk(10))
