from __future__ import annotations

import itertools
import json
import math
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import torch

import nograd.experiment
import nograd.nn
from nograd import io
from nograd.architecture import MAX_FEATURES
from nograd.cli import build_parser, config_from, main, threads_for
from nograd.commands import UsageError
from nograd.config import (
    MAX_EPOCHS,
    MAX_HIDDEN_LAYERS,
    MAX_ROUNDS,
    MAX_SEED,
    MIN_SEED,
    PRESETS,
    SEED_STRIDE,
    TrainConfig,
    build_model,
    build_optimizer,
    config_from_dict,
)
from nograd.nn import Linear, Sequential, matmul
from nograd.nn.activations import ReLU

SHORT = ["--epochs", "3", "--rounds", "2", "--n-train", "60", "--n-test", "50"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("run")
    return out, main(["train", *SHORT, "--seed", "4", "--out", str(out), "--quiet"])


def test_train_writes_every_file(short_run: tuple[Path, int]) -> None:
    out, code = short_run
    assert code == 0
    names = {"metrics.json", "loss.png", "accuracy.png", "boundary.png", "model.safetensors"}
    assert {path.name for path in out.iterdir()} == names | {"checkpoint.safetensors"}


def test_the_checkpoint_is_the_last_rounds_finished_state(short_run: tuple[Path, int]) -> None:
    out, _ = short_run
    training = json.loads(io._read(out / "checkpoint.safetensors", None, "").header["training"])
    assert (training["epoch"], training["step"]) == (3, 0)
    state = io.load_checkpoint(out / "checkpoint.safetensors").metadata["experiment"]
    assert state["round"] == 1 and len(state["records"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert state["records"][0] == metrics["rounds"][0]


@pytest.mark.parametrize("name", ["loss.png", "accuracy.png", "boundary.png"])
def test_figures_are_valid_pngs(short_run: tuple[Path, int], name: str) -> None:
    path = short_run[0] / name
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_metrics_hold_what_they_claim(short_run: tuple[Path, int]) -> None:
    metrics = json.loads((short_run[0] / "metrics.json").read_text())
    config = metrics["config"]
    assert (config["epochs"], config["rounds"], config["seed"], config["task"]) == (3, 2, 4, "disk")
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert len({r["seed"] for r in rounds}) == 2  # fresh data and weights per round
    for r in rounds:
        assert all(len(values) == 3 for values in r["history"].values())
        assert 0 <= r["test_acc"] <= 1
    summary = metrics["summary"]
    test_pct = [100 * r["test_acc"] for r in rounds]
    assert summary["test_acc_pct"]["mean"] == pytest.approx(statistics.mean(test_pct))
    assert summary["test_acc_pct"]["std"] == pytest.approx(statistics.stdev(test_pct))
    assert summary["test_error_pct"]["mean"] == pytest.approx(100 - statistics.mean(test_pct))
    train_err = [100 * (1 - r["train_acc"]) for r in rounds]
    assert summary["train_error_pct"]["mean"] == pytest.approx(statistics.mean(train_err))
    assert metrics["threads"] == 1  # a 25-wide network trains on one thread


def test_evaluate_reproduces_the_saved_rounds_accuracy(
    short_run: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """The last round's training set is the first draw of its seed: same data, same model."""
    out = short_run[0]
    last = json.loads((out / "metrics.json").read_text())["rounds"][-1]
    capsys.readouterr()
    args = ["evaluate", str(out / "model.safetensors"), "--task", "disk", "--n", "60"]
    assert main([*args, "--seed", str(last["seed"])]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {100 * last['train_acc']:.2f}%" in printed


def test_standardized_inputs_are_folded_into_the_saved_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --standardize the model trains on (x - mean) / std, but saves for raw x."""
    sizes = ["--n-train", "200", "--n-test", "200", "--epochs", "20", "--rounds", "1"]
    assert main(["train", *sizes, "--standardize", "--out", str(tmp_path), "--quiet"]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())["rounds"][0]
    assert record["input_std"] != [1.0, 1.0]
    assert record["test_acc"] > 0.8  # a model worth checking
    # the last epoch measured the unfolded model on standardized test data
    assert record["test_acc"] == pytest.approx(record["history"]["test_acc"][-1], abs=0.011)
    seed = str(record["seed"])
    args = ["evaluate", str(tmp_path / "model.safetensors"), "--n", "200", "--seed", seed]
    assert main(args) == 0
    assert f"accuracy {100 * record['train_acc']:.2f}%" in capsys.readouterr().out


def test_train_prints_a_table_and_mean_std(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *SHORT, "--task", "xor", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["round", "train"]
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"]
    assert "±" in out and "test error" in out


def test_the_default_folder_is_runs_timestamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *SHORT, "--rounds", "1", "--quiet"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name[:8].isdigit() and (run / "metrics.json").is_file()


def test_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *SHORT, "--rounds", "1", "--out", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "options", [["--loss", "bce"], ["--preset", "seed", "--activation", "tanh"]]
)
def test_other_losses_and_presets_run(tmp_path: Path, options: list[str]) -> None:
    assert (
        main(["train", *SHORT, "--rounds", "1", *options, "--out", str(tmp_path), "--quiet"]) == 0
    )
    config = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert (
        config["loss"] == options[1] if options[0] == "--loss" else config["activation"] == "tanh"
    )


def test_explicit_options_override_a_preset() -> None:
    args = build_parser().parse_args(["train", "--preset", "seed", "--lr", "0.05"])
    config = config_from(args)
    assert config.lr == 0.05
    assert (config.loss, config.optimizer) == (
        PRESETS["seed"]["loss"],
        PRESETS["seed"]["optimizer"],
    )
    default = config_from(build_parser().parse_args(["train"]))
    assert (default.task, default.hidden, default.rounds) == ("disk", (25, 25, 25), 10)


def test_adadelta_takes_torchs_lr_unless_one_is_given() -> None:
    """Its lr only scales the step it sizes itself: 1.0 by default, as in torch."""
    parse = build_parser().parse_args
    assert config_from(parse(["train", "--optimizer", "adadelta"])).lr == 1.0
    assert config_from(parse(["train", "--optimizer", "lbfgs"])).lr == 1.0
    assert config_from(parse(["train", "--optimizer", "adadelta", "--lr", "0.5"])).lr == 0.5
    assert config_from(parse(["train", "--optimizer", "adam"])).lr == 0.01
    seed = config_from(parse(["train", "--preset", "seed", "--optimizer", "adadelta"]))
    assert seed.lr == PRESETS["seed"]["lr"]  # the preset's lr stands


def test_lbfgs_trains_on_the_whole_training_set_with_a_line_search(tmp_path: Path) -> None:
    """L-BFGS needs the whole gradient, not a minibatch's noise (torch's LBFGS turns nan
    on batches of 32 here): its batch is --n-train unless one is given."""
    parse = build_parser().parse_args
    config = config_from(parse(["train", "--optimizer", "lbfgs", "--n-train", "300"]))
    assert (config.batch_size, config.lr) == (300, 1.0)
    given = config_from(parse(["train", "--optimizer", "lbfgs", "--batch-size", "50"]))
    assert given.batch_size == 50
    seed = config_from(parse(["train", "--preset", "seed", "--optimizer", "lbfgs"]))
    assert (seed.batch_size, seed.lr) == (1000, PRESETS["seed"]["lr"])  # not the preset's 10
    optimizer = build_optimizer(config, build_model(config))
    assert optimizer.param_groups[0]["line_search_fn"] == "strong_wolfe"
    code = main(["train", "--optimizer", "lbfgs", "--rounds", "1", "--epochs", "15", "--quiet",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["rounds"][0]["test_acc"] >= 0.98


@pytest.mark.parametrize(("name", "expected"), [("adam", 0.0), ("adamw", 0.01), ("sgd", 0.0)])
def test_a_config_without_weight_decay_builds_the_optimizers_default(
    name: str, expected: float
) -> None:
    """TrainConfig's weight_decay=None means the optimizer's own default, as documented."""
    model = build_model(TrainConfig())
    optimizer = build_optimizer(TrainConfig(optimizer=name, weight_decay=None), model)
    assert optimizer.param_groups[0]["weight_decay"] == expected


def test_gradcheck_passes_for_every_module_of_nograd_nn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    checked = {line.split("(")[0] for line in out.splitlines()}
    modules = {
        name
        for name in nograd.nn.__all__
        if isinstance(getattr(nograd.nn, name), type)
        and issubclass(getattr(nograd.nn, name), nograd.nn.Module)
        and name not in {"Module", "Loss"}  # the base classes
        and name not in {"ModuleList", "ModuleDict"}  # no forward: the model holding them runs them
    }
    assert modules <= checked, modules - checked
    assert "FAIL" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--lr", "-1"],
        ["train", "--hidden", "a,b"],
        ["train", "--hidden", "25,0"],
        ["train", "--task", "nope"],
        ["train", "--epochs", "0"],
        ["train", "--momentum", "nan"],
        ["train", "--device", "nonsense"],
        ["train", "--optimizer", "adam", "--momentum", "0.9"],
        ["train", "--optimizer", "lbfgs", "--weight-decay", "0.1"],
        ["train", "--loss", "mse", "--label-smoothing", "0.1"],
        ["train", "--fused", "--optimizer", "rmsprop"],
        ["train", "--standardize", "--n-train", "1"],
        ["train", "--cuda-graph"],
        ["train", "--threads", "0"],
        ["train", "--cuda-graph", "--device", "cuda", "--optimizer", "rmsprop"],
        ["train", "--device", "meta"],
        ["train", "--device", "cuda:99"],
        ["train", "--seed", "99999999999999999999"],
        ["train", "--epochs", "1000001"],
        ["train", "--hidden", ",".join(["2"] * 65)],
        ["train", "--hidden", "1048577"],
        ["train", "--threads", "100000"],
        ["evaluate", "no/such/model.safetensors"],
        ["evaluate", "."],
        ["evaluate", "m.safetensors", "--n", "1000000000"],
        ["evaluate", "m.safetensors", "--seed", str(2**64)],
        ["gradcheck", "--seed", str(-(2**63) - 1)],
        ["fly"],
        [],
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nograd: error: ")
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize(
    ("hidden", "batch", "expected"),
    [
        ((25, 25, 25), 32, 1),  # the reference network: 20,000 multiply-adds a layer
        ((), 32, 1),  # no hidden layer at all
        ((128,), 32, 1),  # 2^19
        ((64,), 256, 8),  # 2^20: threads from here on
        ((512, 512), 32, 8),
        ((25, 200), 32, 8),  # the widest layer counts
    ],
)
def test_small_networks_train_on_one_thread(
    hidden: tuple[int, ...], batch: int, expected: int
) -> None:
    assert threads_for(TrainConfig(hidden=hidden, batch_size=batch), default=8) == expected


def test_the_threads_option_is_used_recorded_and_undone(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    argv = ["train", *SHORT, "--rounds", "1", "--threads", "2", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["threads"] == 2
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not matmul.onednn_available(), reason="this torch build has no oneDNN")
def test_the_cpu_matmul_option_is_used_recorded_and_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    honest_fit = nograd.experiment.fit

    def fit_noting_the_backend(*args: Any, **kwargs: Any) -> Any:
        seen.append(nograd.get_cpu_matmul())
        return honest_fit(*args, **kwargs)

    monkeypatch.setattr(nograd.experiment, "fit", fit_noting_the_backend)
    argv = ["train", *SHORT, "--rounds", "1", "--cpu-matmul", "onednn"]
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 0
    assert seen == ["onednn"]
    assert json.loads((tmp_path / "metrics.json").read_text())["cpu_matmul"] == "onednn"
    assert nograd.get_cpu_matmul() == "blas"


def test_cpu_matmul_onednn_without_onednn_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matmul, "onednn_available", lambda: False)
    argv = ["train", *SHORT, "--cpu-matmul", "onednn", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nograd: error: argument --cpu-matmul:") and "no oneDNN" in err
    assert err.count("\n") == 1


def test_a_library_value_error_is_one_line_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fit(*args: Any, **kwargs: Any) -> None:
        raise ValueError("fit: something the user can fix")

    monkeypatch.setattr(nograd.experiment, "fit", broken_fit)
    assert main(["train", *SHORT, "--out", str(tmp_path), "--quiet"]) == 2
    assert capsys.readouterr().err == "nograd: error: fit: something the user can fix\n"


def test_python_dash_m_nograd_is_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nograd", "train", "--hidden", "a,b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        done.stderr.startswith("nograd: error: argument --hidden") and done.stderr.count("\n") == 1
    )


# ----------------------------------------------------------- evaluate, and bounds
def test_evaluate_scores_on_the_task_the_model_was_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *SHORT, "--rounds", "1", "--task", "xor", "--out", str(tmp_path),
                 "--quiet"]) == 0  # fmt: skip
    model = str(tmp_path / "model.safetensors")
    capsys.readouterr()
    assert main(["evaluate", model, "--n", "200"]) == 0
    default = capsys.readouterr().out
    assert main(["evaluate", model, "--n", "200", "--task", "xor"]) == 0
    assert capsys.readouterr().out == default
    assert default.endswith("on 200 fresh xor points (seed 0)\n")
    assert main(["evaluate", model, "--n", "200", "--task", "disk"]) == 0  # --task wins
    assert capsys.readouterr().out.endswith("on 200 fresh disk points (seed 0)\n")


def test_evaluate_of_a_file_without_a_task_scores_on_disk_and_refuses_an_unknown_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file saved by nograd.save without metadata, and one whose metadata is foreign."""
    io.save(Sequential(Linear(2, 2)), tmp_path / "plain.safetensors")
    assert main(["evaluate", str(tmp_path / "plain.safetensors"), "--n", "10"]) == 0
    assert "on 10 fresh disk points" in capsys.readouterr().out
    for metadata, what in [({"task": "mnist"}, "task 'mnist'"), ({"loss": ["ce"]}, "loss ['ce']")]:
        path = tmp_path / "foreign.safetensors"
        io.save(Sequential(Linear(2, 2)), path, metadata=metadata)
        assert main(["evaluate", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"nograd: error: {path}: its metadata names the {what}, not one of")
        assert err.count("\n") == 1


def test_evaluate_a_folder_or_a_parameter_free_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"nograd: error: argument path: {str(tmp_path)!r} is a folder, not a file\n"
    )
    io.save(Sequential(ReLU()), tmp_path / "model.safetensors")  # no parameters at all
    assert main(["evaluate", str(tmp_path)]) == 2
    inside = str(tmp_path / "model.safetensors")
    assert capsys.readouterr().err == (
        f"nograd: error: argument path: {str(tmp_path)!r} is a folder, not a file; pass the "
        f"model file in it, {inside!r}\n"
    )
    assert main(["evaluate", inside, "--n", "10"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_every_argument_of_every_command_has_help() -> None:
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in commands.choices.items():  # type: ignore[union-attr]
        for action in parser._actions:
            assert action.help, (name, action.dest)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", str(MAX_EPOCHS + 1)], f"--epochs: expected at most {MAX_EPOCHS} epochs"),
        (["--rounds", str(MAX_ROUNDS + 1)], f"--rounds: expected at most {MAX_ROUNDS} rounds"),
        (["--hidden", ",".join(["2"] * (MAX_HIDDEN_LAYERS + 1))],
         f"--hidden: expected at most {MAX_HIDDEN_LAYERS} hidden layers, got 65"),
        (["--hidden", f"4,{MAX_FEATURES + 1}"],
         f"--hidden: expected layer widths of at most {MAX_FEATURES}, got {MAX_FEATURES + 1}"),
        (["--seed", str(MAX_SEED + 1)], f"--seed: expected an integer in [{MIN_SEED}, {MAX_SEED}]"),
        (["--seed", str(MIN_SEED - 1)], f"--seed: expected an integer in [{MIN_SEED}, {MAX_SEED}]"),
        (["--seed", "x"], "--seed: expected an integer in"),
        (["--weight-decay", "1e301"], "--weight-decay: expected a number in [0, 1e+300)"),
    ],
)  # fmt: skip
def test_settings_a_checkpoint_could_not_hold_are_refused_when_parsed(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nograd: error: argument {message}") and err.count("\n") == 1


BOUNDS = [  # flag, the first value beyond, the last value within, its config field
    ("--epochs", MAX_EPOCHS + 1, MAX_EPOCHS, "epochs"),
    ("--rounds", MAX_ROUNDS + 1, MAX_ROUNDS, "rounds"),
    ("--seed", MAX_SEED + 1, MAX_SEED, "seed"),
    ("--seed", MIN_SEED - 1, MIN_SEED, "seed"),
    ("--hidden", ",".join(["1"] * (MAX_HIDDEN_LAYERS + 1)), ",".join(["1"] * MAX_HIDDEN_LAYERS),
     "hidden"),
    ("--hidden", MAX_FEATURES + 1, MAX_FEATURES, "hidden"),
    ("--clip-grad-norm", 0, 5e-324, "clip_grad_norm"),
    ("--clip-grad-norm", math.inf, 1e308, "clip_grad_norm"),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "beyond", "within", "field"), BOUNDS)
def test_the_command_line_and_a_checkpoint_share_each_bound(
    flag: str, beyond: Any, within: Any, field: str
) -> None:
    """What the command line accepts, a checkpoint of the run gives back (nograd.config)."""
    with pytest.raises(UsageError, match=f"argument {flag}"):
        build_parser().parse_args(["train", flag, str(beyond)])
    config = config_from(build_parser().parse_args(["train", flag, str(within)]))
    values = json.loads(json.dumps(asdict(config)))  # as a checkpoint holds it
    assert config_from_dict(values, "resume") == config
    if field == "hidden":
        values[field] = [int(width) for width in str(beyond).split(",")]
    else:
        values[field] = beyond
    with pytest.raises(ValueError, match=f"config.{field}"):
        config_from_dict(values, "resume")


def test_every_rounds_seed_is_one_torch_takes() -> None:
    for seed in (MIN_SEED, MAX_SEED):
        for round_index in (0, MAX_ROUNDS - 1):  # as experiment.train_round seeds them
            torch.Generator().manual_seed(SEED_STRIDE * seed + round_index)  # no overflow


def test_a_diverging_run_names_its_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", *SHORT, "--optimizer", "sgd", "--lr", "1e30", "--loss", "mse"]
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("nograd: error: round 1 of 2: fit: the loss became nan")
    assert error.count("\n") == 1


# ------------------------------------------------- memory, and the options against torch
def test_figures_and_evaluate_feed_the_network_in_bounded_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The boundary's 200 x 200 grid and evaluate's --n points go through the network
    1024 at a time, as fit's measurements do: all at once, a network 100000 wide needed
    16 GB per layer, and the run died after training, before writing metrics.json."""
    rows: list[int] = []
    forward = Sequential.forward

    def recording(self: Sequential, x: torch.Tensor) -> torch.Tensor:
        rows.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(Sequential, "forward", recording)
    args = [*SHORT, "--rounds", "1", "--n-test", "1500", "--out", str(tmp_path), "--quiet"]
    assert main(["train", *args]) == 0
    assert max(rows) <= 1024 and (tmp_path / "boundary.png").is_file()
    rows.clear()
    assert main(["evaluate", str(tmp_path / "model.safetensors"), "--n", "3000"]) == 0
    assert sum(rows) >= 3000 and max(rows) <= 1024
    assert "on 3000 fresh disk points" in capsys.readouterr().out


def test_metrics_are_written_before_the_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise MemoryError("no memory left for the figure")

    monkeypatch.setattr(nograd.plots, "plot_boundary", fail)
    with pytest.raises(MemoryError):
        main(["train", *SHORT, "--out", str(tmp_path), "--quiet"])
    assert len(json.loads((tmp_path / "metrics.json").read_text())["rounds"]) == 2


TORCH_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
                     "leaky_relu": torch.nn.LeakyReLU}  # fmt: skip


def torch_twin_of_the_last_round(config: dict[str, Any]) -> torch.nn.Sequential:
    """What ``nograd train`` trains in its last round, written with torch.nn and torch.optim."""
    seed = SEED_STRIDE * config["seed"] + config["rounds"] - 1
    generator = torch.Generator().manual_seed(seed)
    x, y = nograd.experiment.TASKS[config["task"]](config["n_train"], generator=generator).tensors
    nograd.experiment.TASKS[config["task"]](config["n_test"], generator=generator)  # the test set
    torch.manual_seed(seed)
    widths, layers = [2, *config["hidden"]], []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(width_in, width_out), TORCH_ACTIVATIONS[config["activation"]]()]
    twin = torch.nn.Sequential(
        *layers, torch.nn.Linear(widths[-1], 1 if config["loss"] == "bce" else 2)
    )
    hyper = {"lr": config["lr"], "weight_decay": config["weight_decay"]}
    if config["optimizer"] in ("sgd", "rmsprop"):
        hyper["momentum"] = config["momentum"]
    names = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
             "adagrad": "Adagrad", "nadam": "NAdam", "radam": "RAdam", "adamax": "Adamax",
             "adadelta": "Adadelta"}  # fmt: skip
    optimizer = getattr(torch.optim, names[config["optimizer"]])(twin.parameters(), **hyper)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"])
    mean, std = (x.mean(0), x.std(0)) if config["standardize"] else (torch.zeros(2), torch.ones(2))
    losses = {"ce": torch.nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"]),
              "mse": torch.nn.MSELoss(), "bce": torch.nn.BCEWithLogitsLoss()}  # fmt: skip
    targets = {"ce": lambda y: y, "mse": lambda y: torch.nn.functional.one_hot(y, 2).float(),
               "bce": lambda y: y.float().unsqueeze(1)}  # fmt: skip
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset((x - mean) / std, y), config["batch_size"], shuffle=True,
        generator=generator,
    )  # fmt: skip
    with torch.enable_grad():
        for _ in range(config["epochs"]):
            for x_batch, y_batch in loader:
                optimizer.zero_grad()
                losses[config["loss"]](twin(x_batch), targets[config["loss"]](y_batch)).backward()
                if config["clip_grad_norm"] is not None:
                    torch.nn.utils.clip_grad_norm_(twin.parameters(), config["clip_grad_norm"])
                optimizer.step()
            if config["schedule"] == "cosine":
                cosine.step()
    with torch.no_grad():  # the saved model takes raw inputs
        twin[0].weight /= std
        twin[0].bias -= twin[0].weight @ mean
    return twin


@pytest.mark.parametrize(
    "options",
    [
        ["--preset", "seed"],  # ReLU, SGD lr 0.1, batches of 10, MSE on one-hot, standardized
        ["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "0.001", "--lr", "0.05",
         "--activation", "tanh", "--task", "moons", "--hidden", "7,5", "--batch-size", "16"],
        ["--optimizer", "rmsprop", "--momentum", "0.5", "--lr", "0.003", "--schedule",
         "constant", "--activation", "leaky_relu", "--task", "spirals", "--seed", "3"],
        ["--optimizer", "adamw", "--activation", "sigmoid", "--loss", "bce", "--task", "xor"],
        ["--activation", "relu", "--label-smoothing", "0.2", "--weight-decay", "0.1"],
        ["--activation", "relu", "--lr", "0.05", "--clip-grad-norm", "0.05"],  # Adam; steps clip
        ["--optimizer", "adagrad", "--lr", "0.1", "--weight-decay", "0.01", "--activation", "tanh"],
        ["--optimizer", "nadam", "--weight-decay", "0.01", "--activation", "relu", "--task", "xor"],
        ["--optimizer", "radam", "--activation", "sigmoid", "--task", "spirals"],
        ["--optimizer", "adamax", "--weight-decay", "0.1", "--activation", "relu", "--seed", "2"],
        ["--optimizer", "adadelta", "--activation", "tanh"],  # lr 1.0, its own default
    ],
)  # fmt: skip
def test_every_option_trains_what_a_torch_loop_trains(tmp_path: Path, options: list[str]) -> None:
    """The saved model of ``nograd train`` equals, to the bit, the last round of a
    hand-written torch.nn + torch.optim loop configured as its help says (GELU and ELU,
    a few ulps from torch's by design, are left out)."""
    sizes = ["--rounds", "2", "--epochs", "3", "--n-train", "97", "--n-test", "53"]
    assert main(["train", *sizes, *options, "--out", str(tmp_path), "--quiet"]) == 0
    config = json.loads((tmp_path / "metrics.json").read_text())["config"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what nograd train chose for this small network
    try:
        twin = torch_twin_of_the_last_round(config)
    finally:
        torch.set_num_threads(threads)
    ours = io.load_checkpoint(tmp_path / "model.safetensors").model.state_dict()
    theirs = twin.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
