"""The strong-Wolfe line search of L-BFGS, and the cubic interpolation it steps by.

Along a search direction d from the point x, the line search looks at the function of
one variable phi(t) = f(x + t d), whose slope is phi'(t) = g(x + t d) . d. It looks for a
step length t that satisfies the strong Wolfe conditions (Nocedal & Wright, eq. 3.7)::

    phi(t) <= phi(0) + c1 * t * phi'(0)         sufficient decrease (Armijo)
    |phi'(t)| <= c2 * |phi'(0)|                 curvature: the slope has flattened

The numbers stay in the types ``torch.optim.LBFGS`` computes them in: losses as Python
floats, slopes g . d as 0-dim tensors of the parameters' dtype, and step lengths as
either, so every comparison and every interpolated t rounds as PyTorch's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

Step = float | Tensor  # a step length t: a Python number or a 0-dim tensor, as torch has it


def _abs(x: Step) -> Step:
    """|x|, for a number or a 0-dim tensor alike (what Python's ``abs`` does to either)."""
    return x.abs() if isinstance(x, Tensor) else abs(x)


class Trial(NamedTuple):
    """One evaluation along the line: a step length t, phi(t), and the slope there."""

    t: Step
    f: float  # phi(t) = f(x + t d)
    g: Tensor  # the flat gradient at x + t d
    gtd: Tensor  # phi'(t) = g . d, a 0-dim tensor


def cubic_interpolate(
    x1: Step,
    f1: float,
    g1: Tensor,
    x2: Step,
    f2: float,
    g2: Tensor,
    bounds: tuple[Step, Step] | None = None,
) -> Step:
    """The minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1 and g2.

    Nocedal & Wright, eq. 3.59, with x2 the far end of the interval::

        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        d2 = sqrt(d1^2 - g1 * g2)
        x  = x2 - (x2 - x1) * (g2 + d2 - d1) / (g2 - g1 + 2 * d2)

    clamped into ``bounds`` (default: the interval between x1 and x2). When
    d1^2 < g1 g2 the cubic has no local minimum (its slope never returns to 0), and the
    middle of the bounds is returned instead: a bisection.
    """
    if bounds is not None:
        low, high = bounds
    else:
        low, high = (x1, x2) if x1 <= x2 else (x2, x1)

    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:  # (a NaN fails this test too, and bisects)
        d2 = d2_square.sqrt()
        # The same formula, written from whichever end is the larger x, as torch writes
        # it: the two forms round differently, and torch's choice is the one to match.
        if x1 <= x2:
            x_min = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            x_min = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(x_min, low), high)
    return (low + high) / 2.0  # no minimizer: bisect


def strong_wolfe(
    phi: Callable[[Step], tuple[float, Tensor]],
    t: Step,
    d: Tensor,
    f: float,
    g: Tensor,
    gtd: Tensor,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Tensor, Step, int]:
    """A step length t along d that satisfies the strong Wolfe conditions, or the best tried.

    Nocedal & Wright, Algorithms 3.5 (bracketing) and 3.6 (zoom), as minFunc and
    ``torch.optim.LBFGS`` run them:

    1. **Bracket.** Try t. If it breaks sufficient decrease, or is no lower than the
       previous trial, or the slope there has turned uphill (phi'(t) >= 0), a minimizer
       lies between the previous trial and t: zoom into [t_prev, t]. If it satisfies
       the curvature condition too, it is the answer. Otherwise phi still falls steeply:
       extrapolate, t = cubic minimizer clamped to [t + 0.01 (t - t_prev), 10 t].
    2. **Zoom.** Keep a bracket [t_lo, t_hi] where t_lo is the lowest trial that
       satisfies sufficient decrease. Try the cubic minimizer between them: a trial that
       fails sufficient decrease or is no lower than t_lo becomes t_hi; otherwise it
       becomes t_lo (if it also satisfies the curvature condition, stop), and t_hi moves
       to the old t_lo when the slope points away from the old t_hi.

    Args:
        phi: ``phi(t) -> (f(x + t d), flat gradient at x + t d)``; leaves x unchanged.
        t: the first step length to try.
        d: the search direction, a descent direction: gtd < 0.
        f, g, gtd: phi(0), the gradient at x, and phi'(0) = g . d.
        c1, c2: the constants of the two conditions, 0 < c1 < c2 < 1.
        tolerance_change: stop zooming once the bracket moves x by less than this.
        max_ls: the most evaluations after the first.

    Returns:
        ``(phi(t), gradient at x + t d, t, number of evaluations)`` of the chosen t.
    """
    d_norm = d.abs().max()  # |t_hi - t_lo| * max|d|: how far x moves across the bracket

    def evaluate(t: Step) -> Trial:
        f_t, g_t = phi(t)
        return Trial(t, f_t, g_t, g_t.dot(d))  # phi'(t) = g(x + t d) . d

    def sufficient_decrease_fails(trial: Trial) -> bool:
        return bool(trial.f > (f + c1 * trial.t * gtd))  # phi(t) > phi(0) + c1 t phi'(0)

    def curvature_holds(trial: Trial) -> bool:
        return bool(abs(trial.gtd) <= -c2 * gtd)  # |phi'(t)| <= c2 |phi'(0)|, phi'(0) < 0

    start = Trial(0, f, g, gtd)
    new = evaluate(t)
    evals = 1

    # Phase 1 (Algorithm 3.5): grow t until an interval holds an acceptable point.
    prev = start
    bracket: list[Trial] | None = None
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if sufficient_decrease_fails(new) or (ls_iter > 1 and new.f >= prev.f):
            bracket = [prev, new]
            break
        if curvature_holds(new):
            bracket, done = [new], True
            break
        if new.gtd >= 0:  # uphill past a minimum: it lies between the two trials
            bracket = [prev, new]
            break
        min_step = new.t + 0.01 * (new.t - prev.t)  # at least 1% beyond the last step
        max_step = new.t * 10  # and at most ten times it
        t = cubic_interpolate(
            prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd, bounds=(min_step, max_step)
        )
        prev = new
        new = evaluate(t)
        evals += 1
        ls_iter += 1
    if bracket is None:  # out of evaluations while still going downhill
        bracket = [start, new]

    # Phase 2 (Algorithm 3.6): shrink the bracket around a point that satisfies both.
    insufficient_progress = False
    low, high = (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)
    while not done and ls_iter < max_ls:
        if _abs(bracket[1].t - bracket[0].t) * d_norm < tolerance_change:
            break  # the bracket no longer moves x
        first, second = bracket
        t = cubic_interpolate(first.t, first.f, first.gtd, second.t, second.f, second.gtd)

        # A t at an end of the bracket would shrink it by almost nothing. The first time
        # t falls within 10% of an end, accept it and remember; the next time (or if t is
        # at or past an end) move it to 10% of the bracket's width from that end.
        t_min, t_max = min(first.t, second.t), max(first.t, second.t)
        eps = 0.1 * (t_max - t_min)
        if min(t_max - t, t - t_min) < eps:
            if insufficient_progress or t >= t_max or t <= t_min:
                t = t_max - eps if _abs(t - t_max) < _abs(t - t_min) else t_min + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        new = evaluate(t)
        evals += 1
        ls_iter += 1
        if sufficient_decrease_fails(new) or new.f >= bracket[low].f:
            bracket[high] = new  # too high: the new upper end
            low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if curvature_holds(new):
                done = True
            elif new.gtd * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]  # the slope at t points away from t_hi
            bracket[low] = new  # the lowest point yet

    best = bracket[low]
    return best.f, best.g, best.t, evals
