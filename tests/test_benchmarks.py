"""Smoke test of benchmarks/vs_torch.py: its quickest run, its table, its equality check.

Nothing here looks at a timing; the script's numbers are for people to read.
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor

import nograd
from nograd.nn import matmul

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
QUICK = ["--quick", "--cases", "ref", "--batches", "1000", "--threads", "1"]
# in-process: the rows see this test's monkeypatches (a fresh process per row would not)
IN_PROCESS = [*QUICK, "--in-process"]
EQUAL_COLUMN = 13  # "params equal", counting from 0 after the leading "|"


def import_script(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (it imports its sibling _common)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def vs_torch() -> ModuleType:
    return import_script("vs_torch")


def table_rows(markdown: str, which: int = 0) -> list[list[str]]:
    """The cells of each data row of a table of rows: the results table (0), or the
    ``which``-th after it (nograd+oneDNN's, TrainStep's)."""
    tables: list[list[list[str]]] = []
    after_row = False  # whether the line before was a data row: the same table goes on
    for line in markdown.splitlines():
        is_row = line.startswith("| ref ") or line.startswith("| MLP ")
        if is_row:
            if not after_row:
                tables.append([])
            tables[-1].append([cell.strip() for cell in line.strip("|").split("|")])
        after_row = is_row
    return tables[which] if which < len(tables) else []


def test_quick_run_prints_every_row_and_the_params_agree(
    vs_torch: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default run: each row in a fresh process, its results sent back and tabled."""
    out = tmp_path / "table.md"
    threads_before = torch.get_num_threads()

    assert vs_torch.main([*QUICK, "--out", str(out)]) == 0

    written = out.read_text()
    assert written.strip() in capsys.readouterr().out
    assert "| case | threads | optimizer | batch | allocator | nograd (us/step) |" in written
    assert "CPU: " in written and f"torch {torch.__version__}" in written
    assert "each row in a fresh process" in written
    rows = table_rows(written)
    assert [(row[2], row[3], row[4]) for row in rows] == [
        ("sgd", "1000", "fresh"),
        ("adam", "1000", "fresh"),
    ]
    for row in rows:
        assert row[1] == "1"
        assert all(float(cell) > 0 for cell in row[5:9])  # three timings and a ratio
        assert row[EQUAL_COLUMN] == "✓"
        assert float(row[EQUAL_COLUMN + 1]) <= 1e-10  # the float64 gap behind the ✓
        assert float(row[EQUAL_COLUMN + 2]) == 0.0  # nograd's float32 run: PyTorch's bits
        faults = [float(count) for count in row[-1].split(" / ")]  # nograd / PyTorch / minimal
        assert len(faults) == 3 and min(faults) >= 0
    step_rows = table_rows(written, 1)  # nograd.TrainStep's table
    assert [(row[2], row[3]) for row in step_rows] == [("sgd", "1000"), ("adam", "1000")]
    for row in step_rows:
        assert float(row[5]) > 0 and row[-1] == "✓"  # its us/step; nograd's bits
    assert torch.get_num_threads() == threads_before


def test_a_warm_row_frees_a_block_before_it_starts(
    vs_torch: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU MLP rows run "fresh" and "warm"; only "warm" makes and frees the block first."""
    args = vs_torch.build_parser().parse_args(["--cases", "ref,mlp", "--batches", "10"])
    specs = vs_torch.row_specs(args, torch.device("cpu"))
    assert [spec for spec in specs if spec[0] == "mlp" and spec[1] == 1] == [
        ("mlp", 1, optimizer, 256, state)
        for optimizer in ("sgd", "adam")
        for state in ("fresh", "warm")
    ]
    assert {spec[4] for spec in specs if spec[0] == "ref"} == {"fresh"}
    assert {spec[4] for spec in vs_torch.row_specs(args, torch.device("cuda"))} == {"fresh"}

    warmed = []
    monkeypatch.setattr(vs_torch, "warm_allocator", lambda: warmed.append(True))
    settings = vs_torch.settings_from(
        vs_torch.build_parser().parse_args(["--quick"]), torch.device("cpu")
    )
    threads_before = torch.get_num_threads()
    try:
        for state in ("fresh", "warm"):
            row = vs_torch.run_row(vs_torch.RowSpec("ref", 1, "sgd", 1000, state), settings)
            assert row.allocator == state
    finally:
        torch.set_num_threads(threads_before)  # run_row sets the row's count, as main's child
    assert warmed == [True]


def test_rows_from_several_processes_are_pooled_step_by_step(vs_torch: ModuleType) -> None:
    """--processes: each run's chunks rescaled to one step, each still paired with the
    chunks that ran beside it; the worst gap, the median page faults."""
    row = functools.partial(vs_torch.Row, "ref", 1, "sgd", 1000)
    first = row(
        {"nograd": [2.0, 4.0], "minimal": [1.0, 1.0]},  # steps=2: 1 and 2 s per step
        2, 1e-17, {"nograd": 0.0, "minimal": 1e-7}, {"nograd": 1.0, "minimal": 5.0},
    )  # fmt: skip
    second = row(
        {"nograd": [3.0, 3.0], "minimal": [2.0, 3.0]},  # steps=3: nograd 1 s per step
        3, 1e-12, {"nograd": 0.0, "minimal": math.nan}, {"nograd": 3.0, "minimal": 7.0},
    )  # fmt: skip
    third = row(
        {"nograd": [1.5, 1.5], "minimal": [1.0, 1.0]},
        1, 1e-16, {"nograd": 0.0, "minimal": 1e-6}, {"nograd": 2.0, "minimal": 6.0},
    )  # fmt: skip

    assert vs_torch.pooled([first]) is first
    pooled = vs_torch.pooled([first, second, third])

    assert pooled.steps == 1
    assert pooled.seconds["nograd"] == [1.0, 2.0, 1.0, 1.0, 1.5, 1.5]
    assert pooled.seconds["minimal"] == [0.5, 0.5, 2 / 3, 1.0, 1.0, 1.0]
    assert pooled.us_per_step("nograd") == 1.25e6
    # per-chunk ratios 2, 4, 1.5, 1, 1.5, 1.5: paired within each process
    assert pooled.ratio("nograd", "minimal") == 1.5
    assert pooled.gap_float64 == 1e-12
    assert pooled.gap_float32["nograd"] == 0.0 and math.isnan(pooled.gap_float32["minimal"])
    assert pooled.faults == {"nograd": 2.0, "minimal": 6.0}
    assert pooled.onednn_error_ratio is None and pooled.allocator == "fresh"


def test_a_row_in_several_processes(
    vs_torch: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vs_torch.main([*QUICK, "--optimizers", "sgd", "--processes", "2"]) == 0

    out = capsys.readouterr().out
    assert "each row in 2 fresh processes, their chunks pooled" in out
    assert "us/step: the median of 6 chunks" in out  # 3 quick chunks from each process
    (row,) = table_rows(out)
    assert row[EQUAL_COLUMN] == "✓" and float(row[EQUAL_COLUMN + 2]) == 0.0


def test_a_wrong_update_is_caught(
    vs_torch: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = vs_torch.minimal_sgd

    def off_by_one_percent(
        params: list[Tensor], lr: float, momentum: float
    ) -> Callable[[list[Tensor]], None]:
        return honest(params, lr * 1.01, momentum)  # type: ignore[no-any-return]

    monkeypatch.setattr(vs_torch, "minimal_sgd", off_by_one_percent)

    assert vs_torch.main([*IN_PROCESS, "--optimizers", "sgd"]) == 1

    captured = capsys.readouterr()
    (row,) = table_rows(captured.out)
    assert row[EQUAL_COLUMN] == "✗"
    assert "parameters disagree in 1 row" in captured.err


def test_a_trainstep_that_trains_otherwise_is_caught(
    vs_torch: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = vs_torch.trainstep_variant

    def other_start(sizes: Any, init: dict[str, Tensor], *args: Any) -> Any:
        moved = {key: t + 1e-6 for key, t in init.items()}
        return honest(sizes, moved, *args)

    monkeypatch.setattr(vs_torch, "BUILDERS", {**vs_torch.BUILDERS, vs_torch.STEP: other_start})

    assert vs_torch.main([*IN_PROCESS, "--optimizers", "sgd"]) == 1

    captured = capsys.readouterr()
    (row,) = table_rows(captured.out)
    assert row[EQUAL_COLUMN] == "✓"  # nograd itself agrees with PyTorch
    (step_row,) = table_rows(captured.out, 1)
    assert step_row[-1] == "✗"
    assert "nograd TrainStep differs from nograd in 1 row" in captured.err


needs_onednn = pytest.mark.skipif(
    not matmul.onednn_available(), reason="this torch build has no oneDNN linear op"
)
SMALL_MLP = ["--quick", "--cases", "mlp", "--threads", "1", "--optimizers", "sgd", "--in-process"]


@pytest.fixture
def small_mlp(vs_torch: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLP rows on 256-256-256-10 (products still above ONEDNN_MIN_MACS), no memory table
    and no table of fresh processes (each tested on its own)."""
    monkeypatch.setitem(
        vs_torch.CASES, "mlp", vs_torch.Case("MLP small", (256, 256, 256, 10), (256,))
    )
    monkeypatch.setattr(vs_torch, "measure_memory", lambda *args: [])
    monkeypatch.setattr(vs_torch, "measure_alone", lambda *args: [])


@needs_onednn
@pytest.mark.usefixtures("small_mlp")
def test_cpu_mlp_rows_time_nograd_with_onednn_and_check_it_in_float32(
    vs_torch: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vs_torch.main(SMALL_MLP) == 0

    out = capsys.readouterr().out
    assert 'With nograd.set_cpu_matmul("onednn")' in out
    fresh_row, warm_row = table_rows(out)
    onednn_fresh, onednn_warm = table_rows(out, 1)
    assert [row[-1] for row in table_rows(out, 2)] == ["✓", "✓"]  # TrainStep = nograd
    assert fresh_row[4] == onednn_fresh[4] == "fresh" and warm_row[4] == onednn_warm[4] == "warm"
    assert fresh_row[EQUAL_COLUMN] == warm_row[EQUAL_COLUMN] == "✓"
    onednn_row = onednn_fresh
    assert float(onednn_row[5]) > 0  # its us/step
    assert float(onednn_row[-2]) <= vs_torch.ONEDNN_ERROR_RATIO and onednn_row[-1] == "✓"
    assert nograd.get_cpu_matmul() == "blas"  # the variant sets the switch back


@needs_onednn
@pytest.mark.usefixtures("small_mlp")
def test_a_wrong_onednn_product_is_caught(
    vs_torch: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = matmul._linear

    def without_bias(a: Tensor, c: Tensor, bias: Tensor | None, activation: str) -> Tensor:
        return honest(a, c, None, activation)

    monkeypatch.setattr(matmul, "_linear", without_bias)

    assert vs_torch.main(SMALL_MLP) == 1

    captured = capsys.readouterr()
    main_rows = table_rows(captured.out)
    onednn_fresh, onednn_warm = table_rows(captured.out, 1)
    assert [row[EQUAL_COLUMN] for row in main_rows] == ["✓", "✓"]  # float64: torch's products
    assert onednn_fresh[-1] == onednn_warm[-1] == "✗"
    assert "nograd+oneDNN strays too far in 2 row" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--cases", "resnet"],
        ["--threads", "0"],
        ["--batches", "ten"],
        ["--device", "tpu"],
        ["--processes", "0"],
        ["--in-process", "--processes", "2"],
    ],
)
def test_bad_arguments_exit_with_code_2(vs_torch: ModuleType, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        vs_torch.main(argv)
    assert exit_info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the whole benchmark on the GPU")
def test_cuda_without_a_gpu_exits_with_code_2(
    vs_torch: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vs_torch.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.fixture(scope="module")
def gpu_script() -> ModuleType:
    return import_script("gpu")


def test_gpu_script_dry_run_on_the_cpu_checks_and_profiles(
    gpu_script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """gpu.py's CPU dry run (a debugging aid): its checks pass and --profile reports."""
    argv = ["--device", "cpu", "--quick", "--networks", "tiny", "--optimizers", "sgd"]
    assert gpu_script.main([*argv, "--profile", "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "Kernel time, 2-25-25-25-2 batch 100 sgd: needs CUDA" in out
    (row,) = [line for line in out.splitlines() if line.startswith("| 2-25-25-25-2 | 100 | sgd |")]
    assert row.endswith("| ✓ |")  # every variant agrees with PyTorch eager after 8 steps
    assert "| nograd CUDA graph | nograd layer updates |" in out  # both graphs, CUDA only
    for name in ("minimal eager", "nograd eager"):
        assert f"- {name}: " in out and "cudaStreamSynchronize 0" in out
    assert out.count("top self CPU (us per step, calls per step): aten::") == 2  # ranked ops
    (ops,) = [line for line in out.splitlines() if line.startswith("- 2-25-25-25-2 sgd: PyTorch")]
    assert "graph" not in ops and "layer updates" not in ops, ops  # eager variants only


def test_gpu_script_busy_time_counts_overlapping_kernels_once(gpu_script: ModuleType) -> None:
    """--kernels' busy time: the union of (start, duration) spans, in any order."""
    busy_time = gpu_script.busy_time
    assert busy_time([]) == 0
    assert busy_time([(0, 5), (10, 2)]) == 7  # a gap between: both count
    assert busy_time([(10, 2), (0, 5), (3, 4)]) == 9  # (3, 4) runs past (0, 5): 0 to 7
    assert busy_time([(0, 10), (2, 3), (4, 1)]) == 10  # within the first: nothing more
    assert busy_time([(0, 5), (5, 5)]) == 10  # back to back


def test_gpu_script_ratio_pairs_the_chunks_of_each_repetition(gpu_script: ModuleType) -> None:
    """A slow spell that hits both chunks of a repetition leaves their ratio alone."""
    Cell = gpu_script.Cell
    # the second repetition ran twice as slow for both; the third, a little slower for ours
    cells = {"ours": Cell(us=[50.0, 100.0, 60.0]), "theirs": Cell(us=[100.0, 200.0, 100.0])}
    assert gpu_script.ratio(cells, "ours", "theirs") == 0.5  # ratios 0.5, 0.5, 0.6
    assert cells["ours"].median / cells["theirs"].median == 0.6  # the medians' ratio
    cells["theirs"].error = "time: out of memory"
    assert gpu_script.ratio(cells, "ours", "theirs") is None


def test_gpu_script_counts_ops_on_the_meta_device(
    gpu_script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """--count-ops needs no GPU: one row per network and optimizer, a count per variant."""
    assert gpu_script.main(["--count-ops", "--networks", "tiny", "--optimizers", "sgd,adam"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2-25")]
    assert len(rows) == 2
    for row in rows:
        counts = [int(cell) for cell in row.strip("| ").split(" | ")[3:]]
        assert len(counts) == 3 and all(count > 20 for count in counts)  # 4 addmm, 7 mm, ...


def test_threads_script_times_both_counts_and_names_the_choice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """benchmarks/threads.py: a row per width and batch, with what `nograd train` picks."""
    threads_script = import_script("threads")
    before = torch.get_num_threads()
    argv = ["--widths", "16,512", "--batches", "8", "--repeats", "1"]
    assert threads_script.main(argv) == 0
    assert torch.get_num_threads() == before  # the script leaves torch's setting as it was
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()]
    picks = {row[0].strip("| "): row[-1].strip("| ") for row in rows if row[0][2:].isdigit()}
    assert picks == {"16": "1", "512": str(before)}  # 8 x 512^2 = 2^21 multiply-adds


@needs_onednn
def test_matmul_script_times_each_product_both_ways(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """benchmarks/matmul.py: a row per product, with where "onednn" sends it."""
    matmul_script = import_script("matmul")
    before = torch.get_num_threads()
    out = tmp_path / "matmul.md"
    argv = ["--shapes", "64x256x256,32x64x64", "--threads", "1", "--repeats", "1"]
    assert matmul_script.main([*argv, "--out", str(out)]) == 0
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines()]
    rows = [row for row in rows if row[0] in {"64x256x256", "32x64x64"}]
    assert [row[2] for row in rows] == ["y = b + x W^T", "dL/dW = g^T x", "dL/dx = g W"] * 2
    assert all(float(cell) > 0 for row in rows for cell in row[4:9])
    assert [row[-1] for row in rows] == ["oneDNN"] * 3 + ["BLAS"] * 3  # 2^22 and 2^17 MACs
    assert out.read_text().strip() in capsys.readouterr().out
    assert torch.get_num_threads() == before


def test_host_path_script_times_nograds_gpu_branches_on_the_cpu(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """host_path.py: a row per optimizer, and torch's own ``is_cpu`` back afterwards."""
    host_path = import_script("host_path")
    with torch.inference_mode(), host_path.gpu_code_paths():
        assert not torch.zeros(1).is_cpu  # nograd's GPU branches run on CPU tensors
    assert torch.zeros(1).is_cpu
    assert host_path.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()]
    rows = [row for row in rows if row[0] == "2-25-25-25-2"]
    assert [row[2] for row in rows] == ["sgd", "adam"]
    assert all(float(cell) > 0 for row in rows for cell in (row[3], row[4], row[6]))
    assert torch.zeros(1).is_cpu


def test_alone_table_times_each_variant_in_a_fresh_process(vs_torch: ModuleType) -> None:
    """One quick round: a row per optimizer, a time and a page-fault count per variant."""
    lines = vs_torch.measure_alone(["sgd"], 1, quick=True)
    assert lines[0].startswith("Each variant alone in a fresh process")
    (row,) = [[c.strip() for c in line.strip("|").split("|")] for line in lines if "| sgd" in line]
    assert all(float(cell) > 0 for cell in row[1:5])  # three us/step and a ratio
    assert all(float(cell) >= 0 for cell in row[7:])  # page faults per step


def test_alone_ratio_is_the_median_of_each_rounds_ratio(vs_torch: ModuleType) -> None:
    runs = {
        "nograd": [{"us": 90.0}, {"us": 180.0}, {"us": 95.0}],
        "PyTorch": [{"us": 100.0}, {"us": 200.0}, {"us": 100.0}],
    }
    assert vs_torch.alone_ratio(runs, "nograd", "PyTorch") == 0.9  # 0.9, 0.9, 0.95


def test_a_ratio_that_rounds_onto_its_target_shows_a_third_decimal() -> None:
    """0.363 against a ceiling of 0.36 must not read "0.36" beside a ✗."""
    ratio_text = import_script("_common").ratio_text
    assert ratio_text(0.363, 0.36) == "0.363"
    assert ratio_text(0.357, 0.36) == "0.357"
    assert ratio_text(0.36, 0.36) == "0.36"  # exactly on it: two decimals say it all
    assert ratio_text(0.28, 0.30) == "0.28"
    assert ratio_text(0.5) == "0.50"


def test_fused_script_times_both_updates_and_checks_torchs_fused_bits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """fused.py: a row per optimizer, each with fused = torch's fused ✓."""
    fused = import_script("fused")
    assert fused.main(["--quick", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()]
    rows = [row for row in rows if row[0] == "2-25-25-25-2"]
    assert [row[1] for row in rows] == ["sgd", "adam"]
    assert all(row[5] == "✓" and float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_frozen_script_times_both_and_checks_the_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """frozen.py: a row per count of frozen layers, each with the same parameters ✓."""
    frozen = import_script("frozen")
    assert frozen.main(["--frozen", "0,2", "--repeats", "1"]) == 0
    rows = [line.strip("|").split("|") for line in capsys.readouterr().out.splitlines()]
    rows = [[cell.strip() for cell in row] for row in rows if row[0].strip() == "1"]
    assert [row[1] for row in rows] == ["0", "2"]
    assert all(row[5] == "✓" and float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_frozen_script_catches_a_wrong_gradient(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = import_script("frozen")
    accumulate = nograd.nn.Parameter.accumulate_grad
    monkeypatch.setattr(
        nograd.nn.Parameter, "accumulate_grad", lambda p, g: accumulate(p, g * 1.01)
    )
    assert frozen.main(["--frozen", "1", "--repeats", "1"]) == 1
    assert "✗ differ" in capsys.readouterr().out


def _git_revision() -> bool:
    """Whether this checkout is a git repository that ``git archive HEAD`` can read."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(BENCHMARKS.parent), "rev-parse", "HEAD"],
            capture_output=True,
            check=False,
        )
    except OSError:
        return False
    return done.returncode == 0


needs_git = pytest.mark.skipif(not _git_revision(), reason="not a git checkout")


def _versions_rows(out: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()]
    return [row for row in rows if row[0] in ("sgd", "adam") and len(row) == 6]


@needs_git
def test_versions_script_times_a_revision_beside_this_checkout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """versions.py: HEAD's package imported as nograd_old, timed in turns with nograd;
    the same code trains to the same bits, and the old package is gone afterwards."""
    versions = import_script("versions")
    assert versions.main(["--rev", "HEAD", "--quick", "--optimizers", "sgd"]) == 0
    (row,) = _versions_rows(capsys.readouterr().out)
    assert row[:2] == ["sgd", "1000"] and row[5] == "✓"
    assert float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0
    assert not any(name.startswith("nograd_old") for name in sys.modules)


@needs_git
def test_versions_script_catches_a_version_that_trains_otherwise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = import_script("versions")
    backward = nograd.nn.CrossEntropyLoss.backward
    monkeypatch.setattr(
        nograd.nn.CrossEntropyLoss, "backward", lambda self, g=None: backward(self, g) * 1.01
    )
    assert versions.main(["--rev", "HEAD", "--quick", "--optimizers", "sgd"]) == 1
    (row,) = _versions_rows(capsys.readouterr().out)
    assert row[5] == "✗ differ"


def _straight_rows(out: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()]
    return [row for row in rows if len(row) == 14 and row[0].isdigit()]


def test_straight_line_script_runs_nograds_kernels_to_the_same_bits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """straight_line.py: nograd's kernels as one function train to nograd's parameters."""
    straight = import_script("straight_line")
    threads_before = torch.get_num_threads()
    assert straight.main(["--quick"]) == 0
    (row,) = _straight_rows(capsys.readouterr().out)
    assert row[0] == "1000" and row[-2] == row[-1] == "✓"  # straight and TrainStep
    assert all(float(cell) > 0 for cell in row[1:12])
    assert torch.get_num_threads() == threads_before


def test_straight_line_script_catches_a_step_that_is_not_nograds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Straight's ReLU backward letting the gradient through at 0: not nograd's step."""
    straight = import_script("straight_line")
    monkeypatch.setattr(
        straight, "_threshold_backward", lambda g, a, at: torch.where(a >= at, g, 0.0)
    )
    assert straight.main(["--quick"]) == 1
    (row,) = _straight_rows(capsys.readouterr().out)
    assert row[-2] == "✗ differ" and row[-1] == "✓"  # TrainStep is still nograd's step
