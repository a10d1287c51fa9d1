"""Hard rule 1: src/ uses torch as a tensor library only, never its autograd or nn.

The scanner reads the syntax tree, so comments and docstrings that *mention* torch.nn
are fine; only code that imports or touches a forbidden name is reported.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import torch

from nograd.nn import Linear, Sequential

SRC = Path(__file__).resolve().parents[1] / "src"
FORBIDDEN = ("torch.nn", "torch.autograd", "torch.optim", "torch.func", "torch.compile")
TENSOR_METHODS = {
    "sum",
    "mean",
    "norm",
    "pow",
    "exp",
    "log",
    "abs",
    "square",
    "prod",
    "max",
    "min",
    "detach",
    "clone",
    "reshape",
    "view",
    "mm",
    "matmul",
    "dot",
}  # fmt: skip; not .to()/.float(): a Module has them too


def _forbidden(dotted: str) -> bool:
    """torch.nn and torch.nn.X are forbidden; torch.nnx (no such thing) would not be."""
    if dotted == "torch.Tensor.backward":
        return True
    return any(dotted == name or dotted.startswith(name + ".") for name in FORBIDDEN)


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``th.nn.functional`` -> ``torch.nn.functional`` when ``th`` is an alias of torch."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _is_tensor_annotation(annotation: ast.expr | None) -> bool:
    text = ast.unparse(annotation) if annotation is not None else ""
    return text in {"Tensor", "torch.Tensor"} or text.startswith(("Tensor |", "torch.Tensor |"))


class _Scanner(ast.NodeVisitor):
    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # local name -> the torch path it stands for
        self.tensor_names: set[str] = {"loss"}  # names holding tensors, by convention or type
        self.problems: list[tuple[int, str]] = []

    def report(self, node: ast.AST, what: str) -> None:
        self.problems.append((getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _forbidden(alias.name):
                self.report(node, f"import {alias.name}")
            elif alias.name == "torch" or alias.name.startswith("torch."):
                # `import torch.linalg` binds `torch`; `import torch as th` binds `th`
                local = alias.asname or alias.name.split(".")[0]
                self.aliases[local] = alias.name if alias.asname else "torch"

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if _forbidden(module) or _forbidden(full):
                self.report(node, f"from {module} import {alias.name}")
            elif module == "torch" or module.startswith("torch."):
                self.aliases[alias.asname or alias.name] = full

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node, self.aliases)
        if dotted is not None and _forbidden(dotted):
            self.report(node, dotted)
            return  # report torch.nn.functional.relu once, not once per prefix
        if "requires_grad" in node.attr:
            self.report(node, f".{node.attr}")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if "requires_grad" in node.id:
            self.report(node, node.id)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None and "requires_grad" in node.arg:
            self.report(node.value, f"{node.arg}=")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer = set(self.tensor_names)
        arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        self.tensor_names |= {a.arg for a in arguments if _is_tensor_annotation(a.annotation)}
        self.generic_visit(node)
        self.tensor_names = outer

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Assign(self, node: ast.Assign) -> None:
        if self._is_tensor(node.value):
            self.tensor_names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name) and _is_tensor_annotation(node.annotation):
            self.tensor_names.add(node.target.id)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "backward"
            and self._is_tensor(func.value)
        ):
            self.report(node, f"{ast.unparse(func.value)}.backward() on a tensor")
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2:
            owner, name = _dotted(node.args[0], self.aliases), node.args[1]
            if owner and isinstance(name, ast.Constant) and _forbidden(f"{owner}.{name.value}"):
                self.report(node, f"getattr({owner}, {name.value!r})")
        callee = ast.unparse(func)
        if callee in {"importlib.import_module", "import_module", "__import__"} and node.args:
            target = node.args[0]
            if isinstance(target, ast.Constant) and _forbidden(str(target.value)):
                self.report(node, f"{callee}({target.value!r})")
        self.generic_visit(node)

    def _is_tensor(self, node: ast.expr) -> bool:
        """A conservative guess: torch.f(...), t.sum(...), a * b, or a name known to hold one."""
        if isinstance(node, (ast.BinOp, ast.UnaryOp)):
            return True
        if isinstance(node, ast.Name):
            return node.id in self.tensor_names
        if isinstance(node, ast.Call):
            func = node.func
            if _dotted(func, self.aliases) is not None:
                return True  # torch.sum(...), torch.randn(...)
            return isinstance(func, ast.Attribute) and func.attr in TENSOR_METHODS
        return False


def scan(source: str) -> list[tuple[int, str]]:
    """(line, what) for each forbidden import or use in ``source``."""
    scanner = _Scanner()
    scanner.visit(ast.parse(source))
    return scanner.problems


SOURCE_FILES = sorted(SRC.rglob("*.py"))


def test_the_scan_sees_the_package() -> None:
    names = {path.name for path in SOURCE_FILES}
    assert {"module.py", "linear.py", "container.py", "gradcheck.py"} <= names


@pytest.mark.parametrize("path", SOURCE_FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_source_file_is_pure(path: Path) -> None:
    problems = scan(path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(f"{path}:{line}: {what}" for line, what in problems)


FORBIDDEN_SNIPPETS = [
    "import torch.nn",
    "import torch.nn.functional as F",
    "import torch.autograd",
    "import torch.optim as optim",
    "from torch import nn",
    "from torch import autograd as ag",
    "from torch.nn import Linear",
    "from torch.nn.functional import relu",
    "from torch.func import grad",
    "from torch import compile",
    "import torch\ny = torch.nn.functional.relu(x)",
    "import torch\ng = torch.autograd.grad(y, x)",
    "import torch\nm = torch.nn.Linear(2, 3)",
    "import torch\nopt = torch.optim.SGD(params, lr=0.1)",
    "import torch\nf = torch.compile(f)",
    "import torch\nj = torch.func.jacrev(f)",
    "import torch as th\nlayer = th.nn.Linear(2, 2)",
    "import torch.linalg\nx = torch.nn.Identity()",
    "x = torch.zeros(3, requires_grad=True)",
    "x.requires_grad_()",
    "x.requires_grad = True",
    "import torch\ntorch.sum(x).backward()",
    "(y * g).sum().backward()",
    "y.mean().backward()",
    "loss = loss_fn(pred, y)\nloss.backward()",
    "z = a @ b\nz.backward(g)",
    "def f(y: Tensor) -> None:\n    y.backward()",
    "def f(y: torch.Tensor | None) -> None:\n    y.backward()",
    "from torch import Tensor\nTensor.backward(y)",
    "import torch\nnn = getattr(torch, 'nn')",
    "import importlib\nnn = importlib.import_module('torch.nn')",
]


@pytest.mark.parametrize("snippet", FORBIDDEN_SNIPPETS)
def test_scanner_catches_forbidden_code(snippet: str) -> None:
    assert scan(snippet), f"the scanner missed:\n{snippet}"


ALLOWED_SNIPPET = textwrap.dedent(
    '''
    """Unlike torch.nn, nothing here uses torch.autograd or .backward() on a tensor."""

    import torch
    from torch import Tensor

    from nograd.nn import Module
    from nograd.nn.parameter import Parameter

    # torch.nn.Linear would call x.requires_grad_(); we never do
    def step(model: Module, loss_fn: Module, x: Tensor, y: Tensor) -> Tensor:
        loss = loss_fn(model(x), y)
        grad = loss_fn.backward()
        model.backward(grad)
        for layer in reversed(list(model.children())):
            layer.backward(grad)
        out = torch.softmax(x, dim=1) + torch.logsumexp(x, dim=1, keepdim=True)
        return loss + out.sum() * torch.nn_free_name_is_fine
    '''
)


def test_scanner_accepts_comments_docstrings_and_module_backward() -> None:
    assert scan(ALLOWED_SNIPPET) == []


# ------------------------------------------------------- running without autograd
def _train_steps(steps: int) -> list[float]:
    """A small regression fit by hand: forward, MSE, backward, SGD on .data."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = Sequential(Linear(3, 8), Linear(8, 1))
    x = torch.randn(16, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    losses = []
    for _ in range(steps):
        model.zero_grad()
        pred = model(x)
        diff = pred - y
        losses.append(float((diff * diff).mean()))
        model.backward(2 * diff / diff.numel())  # dL/dpred of the mean squared error
        for param in model.parameters():
            assert param.grad is not None
            param.data -= 0.1 * param.grad
    return losses


def _forbid_tensor_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("nograd called torch autograd")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.Tensor, "requires_grad_", refuse)


def test_training_runs_with_grad_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_tensor_autograd(monkeypatch)
    with torch.set_grad_enabled(False):
        losses = _train_steps(20)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]


def test_training_runs_in_inference_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_tensor_autograd(monkeypatch)
    with torch.set_grad_enabled(False):
        expected = _train_steps(5)
    with torch.inference_mode():
        assert _train_steps(5) == expected
