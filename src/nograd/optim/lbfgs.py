"""L-BFGS: quasi-Newton steps whose curvature comes from the last few gradients."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from nograd.nn.parameter import Parameter
from nograd.optim.line_search import Step, strong_wolfe
from nograd.optim.optimizer import Optimizer, ParamGroup, ParamsT


class LBFGS(Optimizer):
    """L-BFGS (Liu & Nocedal, 1989), as ``torch.optim.LBFGS``.

    All parameters are seen as one flat vector x with flat gradient g. One
    ``step(closure)`` runs up to ``max_iter`` iterations of::

        d = -g                              on the very first iteration
        d = -H g                            later: H from the stored pairs (s, y)
        t = min(1, 1 / sum|g|) * lr         on the very first iteration, else lr
        t = strong_wolfe(x, d, t)           if line_search_fn == "strong_wolfe"
        x = x + t * d
        s = t * d,  y = g_new - g           stored if y . s > 1e-10 (last history_size)

    H is never formed: the two-loop recursion (``two_loop_recursion``) computes H g from
    the pairs, with H0 = (s . y / y . y) I from the latest pair. A step stops early when
    max|g| <= tolerance_grad, g . d > -tolerance_change (d no longer goes downhill),
    max|t d| or the loss's change falls below tolerance_change, or the closure has been
    called ``max_eval`` times.

    The state is global, kept as torch keeps it, in the first parameter's state (so
    ``state_dict()`` moves between nograd and PyTorch): ``func_evals`` and ``n_iter``
    (counts over all steps), ``d``, ``t``, ``old_dirs`` (the y's), ``old_stps`` (the
    s's), ``ro`` (1 / y . s each), ``H_diag``, ``prev_flat_grad``, ``prev_loss`` and
    ``al`` (the two-loop recursion's alphas).

    Args:
        params: the parameters; a single group only.
        lr: scales each step t (a 1-element tensor is taken too, as torch takes it).
        max_iter: most iterations per ``step``.
        max_eval: most closure calls per ``step``; default ``max_iter * 5 // 4``.
        tolerance_grad: stop when max|g| falls to this.
        tolerance_change: stop when the step or the loss changes by less than this.
        history_size: how many pairs (s, y) to keep.
        line_search_fn: None (fixed steps of length lr) or ``"strong_wolfe"``.
    """

    needs_closure = True  # step() evaluates the loss itself: fit() hands it a closure

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_iter * 5 // 4 if max_eval is None else max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        lr = options["lr"]
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError(f"LBFGS: expected lr to be a 1-element tensor, got {lr.numel()}")
        self._require(bool(lr >= 0.0), "lr", ">= 0", lr)  # NaN fails too

    def add_param_group(self, param_group: ParamGroup) -> None:
        """Raises ValueError for a second group: L-BFGS has one flat x, no per-group options.

        (torch refuses a second group in ``__init__``, but one added later only at
        ``step``; nograd refuses it when it comes.)
        """
        if self.param_groups:
            raise ValueError("LBFGS: expected a single parameter group, got a second one")
        super().add_param_group(param_group)

    def _copy_state(self, param: Parameter, index: Any, key: str, value: Any) -> Any:
        """A loaded state value, cast as torch casts it: every tensor, in the lists too, to
        the first parameter's device and floating dtype. Not checked against its shape:
        the vectors here span all the parameters."""
        if isinstance(value, (list, tuple)):
            return type(value)(self._copy_state(param, index, key, item) for item in value)
        if not isinstance(value, Tensor):
            return copy.deepcopy(value)  # the counters, prev_loss, and None before a step
        dtype = param.dtype if param.data.is_floating_point() else None
        return value.to(device=param.device, dtype=dtype, copy=True)

    def _pack(self, entry: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        """The state as torch writes it, with ``prev_flat_grad`` a normal tensor.

        torch's step overwrites ``prev_flat_grad`` in place (``copy_``), and its
        ``load_state_dict`` keeps the tensor it is given: one made under
        ``torch.inference_mode`` (nograd's usual mode) would make torch's next step
        fail. So such a one is given as a normal copy; the other tensors are shared.
        """
        packed = super()._pack(entry, dtype)
        prev_flat_grad = packed.get("prev_flat_grad")
        if isinstance(prev_flat_grad, Tensor) and prev_flat_grad.is_inference():
            with torch.inference_mode(False):  # a clone made here is a normal tensor
                packed["prev_flat_grad"] = prev_flat_grad.clone()
        return packed

    # ------------------------------------------------------------ the flat vector x
    def _gather_flat_grad(self, params: list[Parameter]) -> Tensor:
        """g: every gradient flattened into one real vector; a missing one counts as zeros.

        A complex gradient enters as its real and imaginary parts, side by side: torch
        optimizes a complex parameter as the pair of real ones it is made of."""
        views = []
        for param in params:
            grad = param.data.new_zeros(param.numel()) if param.grad is None else param.grad
            views.append((torch.view_as_real(grad) if grad.is_complex() else grad).reshape(-1))
        return torch.cat(views, 0)

    def _add_step(self, params: list[Parameter], t: Step, d: Tensor) -> None:
        """x = x + t * d, slice by slice of d, in place in each ``param.data``."""
        offset = 0
        for param in params:
            data = torch.view_as_real(param.data) if param.data.is_complex() else param.data
            numel = data.numel()
            # alpha takes a number: float(t) is the number torch reads from a 0-dim t
            data.add_(d[offset : offset + numel].view_as(data), alpha=float(t))
            offset += numel

    def _evaluate_at(
        self,
        closure: Callable[[], Any],
        params: list[Parameter],
        x: list[Tensor],
        d: Tensor,
        t: Step,
    ) -> tuple[float, Tensor]:
        """phi(t) = f(x + t d) and the gradient there; the parameters go back to x after."""
        self._add_step(params, t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad(params)
        for param, saved in zip(params, x, strict=True):
            param.data.copy_(saved)  # a copy of x, not x + t d - t d: exactly the old values
        return loss, flat_grad

    # ------------------------------------------------------------------------ step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Run up to ``max_iter`` L-BFGS iterations; return the loss at the starting x.

        Args:
            closure: required; clears the gradients, runs the forward and backward
                passes and returns the loss. nograd's backward needs no autograd, so
                the closure is called as it comes (torch wraps it in
                ``torch.enable_grad()``), and works under ``torch.inference_mode()``.
        """
        if closure is None:
            raise TypeError(
                "LBFGS.step: expected a closure that recomputes the loss and the gradients"
            )
        group = self.param_groups[0]
        lr = group["lr"]
        if isinstance(lr, Tensor) and lr.dim() != 0:
            lr = lr.squeeze()  # a 1-element tensor, used as a 0-dim one (torch's _to_scalar)
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size, line_search_fn = group["history_size"], group["line_search_fn"]
        params: list[Parameter] = group["params"]

        state = self.state[params[0]]  # the global state, where torch keeps it
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad(params)
        opt_cond = flat_grad.abs().max() <= tolerance_grad  # first-order optimality
        if opt_cond:
            return orig_loss  # already at a stationary point

        # What the last step left; None before the first iteration ever.
        d: Any = state.get("d")  # the last direction
        t: Any = state.get("t")  # the last step length: a number or a 0-dim tensor
        old_dirs: Any = state.get("old_dirs")  # the y's, oldest first
        old_stps: Any = state.get("old_stps")  # the s's
        ro: Any = state.get("ro")  # 1 / (y . s) of each pair
        H_diag: Any = state.get("H_diag")  # gamma: H0 = gamma I
        prev_flat_grad: Any = state.get("prev_flat_grad")
        prev_loss: Any = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # --- the direction d
            if state["n_iter"] == 1:
                d = flat_grad.neg()  # d = -g: no curvature known yet
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad.sub(prev_flat_grad)  # y = g_k - g_(k-1)
                s = d.mul(t)  # s = t * d, the step just taken
                ys = y.dot(s)
                # Only a pair with y . s > 0 keeps H positive definite (d downhill).
                if ys > 1e-10:
                    if len(old_dirs) == history_size:  # forget the oldest pair
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)  # rho = 1 / (y . s)
                    H_diag = ys / y.dot(y)  # gamma = s . y / y . y  (N&W eq. 7.20)
                if "al" not in state:
                    state["al"] = [None] * history_size
                d = two_loop_recursion(flat_grad, old_dirs, old_stps, ro, H_diag, state["al"])

            # flat_grad is never changed in place, so the reference is enough (torch copies
            # into a buffer; a state tensor left unwritten also works in and out of
            # torch.inference_mode).
            prev_flat_grad = flat_grad
            prev_loss = loss

            # --- the step length t (the very first moves x by at most lr: |t d|_1 <= lr)
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)  # phi'(0) = g . d, the slope along d
            if gtd > -tolerance_change:
                break  # d no longer goes downhill

            ls_func_evals = 0
            if line_search_fn is not None:
                if line_search_fn != "strong_wolfe":
                    raise RuntimeError(
                        f"LBFGS: expected line_search_fn None or 'strong_wolfe', "
                        f"got {line_search_fn!r}"
                    )

                x = [p.data.clone(memory_format=torch.contiguous_format) for p in params]
                phi = functools.partial(self._evaluate_at, closure, params, x, d)
                loss, flat_grad, t, ls_func_evals = strong_wolfe(
                    phi, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
                )
                self._add_step(params, t, d)  # x = x + t * d
                opt_cond = flat_grad.abs().max() <= tolerance_grad
            else:
                self._add_step(params, t, d)  # x = x + t * d
                # The last iteration skips the evaluation: with minibatches, a loss at the
                # new x is of no use (the next step draws a new batch).
                if n_iter != max_iter:
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad(params)
                    opt_cond = flat_grad.abs().max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # --- stop?
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if d.mul(t).abs().max() <= tolerance_change:
                break  # x barely moves
            if abs(loss - prev_loss) < tolerance_change:
                break  # the loss barely moves

        state["d"], state["t"] = d, t
        state["old_dirs"], state["old_stps"], state["ro"] = old_dirs, old_stps, ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"], state["prev_loss"] = prev_flat_grad, prev_loss
        return orig_loss


def two_loop_recursion(
    g: Tensor,
    old_dirs: list[Tensor],
    old_stps: list[Tensor],
    ro: list[Tensor],
    H_diag: float | Tensor,
    al: list[Any],
) -> Tensor:
    """d = -H g without forming H: Nocedal & Wright, Algorithm 7.4.

    With the stored pairs s_i (``old_stps``), y_i (``old_dirs``), rho_i = 1 / (y_i . s_i)
    (``ro``), oldest first, and H0 = gamma I (``H_diag`` = gamma)::

        q = -g
        for i newest to oldest:  alpha_i = rho_i s_i . q;   q = q - alpha_i y_i
        r = gamma q
        for i oldest to newest:  beta = rho_i y_i . r;      r = r + (alpha_i - beta) s_i
        d = r

    ``al`` receives the alphas (torch keeps them in the state, as ``al``).
    """
    q = g.neg()
    for i in reversed(range(len(old_dirs))):
        al[i] = old_stps[i].dot(q) * ro[i]  # alpha_i = rho_i s_i . q
        q.add_(old_dirs[i], alpha=-al[i])  # q = q - alpha_i y_i
    r = torch.mul(q, H_diag)  # r = H0 q
    for i in range(len(old_dirs)):
        beta = old_dirs[i].dot(r) * ro[i]  # beta = rho_i y_i . r
        r.add_(old_stps[i], alpha=al[i] - beta)  # r = r + (alpha_i - beta) s_i
    return r
