"""Masking schedules: alpha_t, its derivative, its inverse, and the ELBO weights (docs/math.md#schedules).

alpha_t is the probability that a token is still unmasked at time t (MD4 Sec. 2, MDLM Sec. 3).
A schedule is the single place where the ELBO weights are computed:

* continuous weight  w(t) = -alpha'_t / (1 - alpha_t)            (MD4 eq. 5 / MDLM eq. 10)
* discrete weight    (alpha_s - alpha_t) / (1 - alpha_t), s < t   (MD4 Sec. 3 / MDLM eq. 8)

Every method takes and returns tensors of any shape; the computation happens in the dtype of t.
``one_minus_alpha`` is written out per schedule so that 1 - alpha_t keeps full precision near t = 0,
where the weights divide by it.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError


class Schedule:
    """Base class. Subclasses implement ``alpha``, ``one_minus_alpha``, ``dalpha`` and ``inverse``."""

    name: str = "schedule"

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        return 1.0 - self.alpha(t)

    def dalpha(self, t: Tensor) -> Tensor:
        """d alpha_t / dt (negative)."""
        raise NotImplementedError

    def inverse(self, alpha: Tensor) -> Tensor:
        """t(alpha): the time at which alpha_t equals ``alpha``."""
        raise NotImplementedError

    def weight(self, t: Tensor) -> Tensor:
        """Continuous-time ELBO weight w(t) = -alpha'_t / (1 - alpha_t) >= 0 (MD4 eq. 5)."""
        return -self.dalpha(t) / self.one_minus_alpha(t)

    def discrete_weight(self, s: Tensor, t: Tensor) -> Tensor:
        """Discrete-time ELBO weight (alpha_s - alpha_t) / (1 - alpha_t) for s < t (MDLM eq. 8)."""
        return (self.one_minus_alpha(t) - self.one_minus_alpha(s)) / self.one_minus_alpha(t)

    @property
    def alpha_0(self) -> float:
        return float(self.alpha(torch.tensor(0.0, dtype=torch.float64)))

    @property
    def alpha_1(self) -> float:
        return float(self.alpha(torch.tensor(1.0, dtype=torch.float64)))

    def config(self) -> dict:
        """The arguments that rebuild this schedule with :func:`get_schedule`."""
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Linear(Schedule):
    """alpha_t = 1 - t (MD4)."""

    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def one_minus_alpha(self, t):
        return t

    def dalpha(self, t):
        return -torch.ones_like(t)

    def inverse(self, alpha):
        return 1.0 - alpha

    def weight(self, t):
        return 1.0 / t


class LogLinear(Schedule):
    """alpha_t = 1 - (1 - eps) t (MDLM's log-linear noise, sigma_t = -log(1 - (1 - eps) t))."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        if not 0.0 <= eps < 1.0:
            raise MaskdiffError(f"loglinear eps must be in [0, 1), got {eps}")
        self.eps = eps

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def one_minus_alpha(self, t):
        return (1.0 - self.eps) * t

    def dalpha(self, t):
        return torch.full_like(t, -(1.0 - self.eps))

    def inverse(self, alpha):
        return (1.0 - alpha) / (1.0 - self.eps)

    def weight(self, t):
        return 1.0 / t

    def config(self):
        return {"name": self.name, "eps": self.eps}


class Polynomial(Schedule):
    """alpha_t = 1 - t^w (MD4). w = 1 is the linear schedule."""

    name = "polynomial"

    def __init__(self, w: float = 2.0):
        if not w > 0:
            raise MaskdiffError(f"polynomial exponent w must be positive, got {w}")
        self.w = w

    def alpha(self, t):
        return 1.0 - t**self.w

    def one_minus_alpha(self, t):
        return t**self.w

    def dalpha(self, t):
        return -self.w * t ** (self.w - 1.0)

    def inverse(self, alpha):
        return (1.0 - alpha) ** (1.0 / self.w)

    def weight(self, t):
        return self.w / t

    def config(self):
        return {"name": self.name, "w": self.w}


class Geometric(Schedule):
    """alpha_t = exp(-s(t)), s(t) = s_min^(1-t) s_max^t (MD4; the geometric noise of SEDD)."""

    name = "geometric"

    def __init__(self, s_min: float = 1e-4, s_max: float = 20.0):
        if not 0 < s_min < s_max:
            raise MaskdiffError(f"geometric needs 0 < s_min < s_max, got s_min={s_min}, s_max={s_max}")
        self.s_min, self.s_max = s_min, s_max
        self._log_ratio = math.log(s_max / s_min)

    def _s(self, t):
        return self.s_min ** (1.0 - t) * self.s_max**t

    def alpha(self, t):
        return torch.exp(-self._s(t))

    def one_minus_alpha(self, t):
        return -torch.expm1(-self._s(t))

    def dalpha(self, t):
        s = self._s(t)
        return -torch.exp(-s) * s * self._log_ratio

    def inverse(self, alpha):
        return torch.log(-torch.log(alpha) / self.s_min) / self._log_ratio

    def config(self):
        return {"name": self.name, "s_min": self.s_min, "s_max": self.s_max}


class Cosine(Schedule):
    """MD4's cosine: alpha_t = 1 - cos(pi/2 (1 - t)), so 1 - alpha_t = sin(pi t / 2)."""

    name = "cosine"

    def alpha(self, t):
        return 1.0 - torch.sin(0.5 * math.pi * t)

    def one_minus_alpha(self, t):
        return torch.sin(0.5 * math.pi * t)

    def dalpha(self, t):
        return -0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def inverse(self, alpha):
        return 1.0 - (2.0 / math.pi) * torch.arccos(1.0 - alpha)

    def weight(self, t):
        return 0.5 * math.pi / torch.tan(0.5 * math.pi * t)


class MDLMCosine(Schedule):
    """MDLM's cosine: alpha_t = eps + (1 - eps) cos(pi t / 2). Not the same function as MD4's."""

    name = "mdlm-cosine"

    def __init__(self, eps: float = 1e-3):
        if not 0.0 <= eps < 1.0:
            raise MaskdiffError(f"mdlm-cosine eps must be in [0, 1), got {eps}")
        self.eps = eps

    def alpha(self, t):
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def one_minus_alpha(self, t):
        # 1 - cos(x) = 2 sin^2(x / 2), exact near t = 0.
        return (1.0 - self.eps) * 2.0 * torch.sin(0.25 * math.pi * t) ** 2

    def dalpha(self, t):
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def inverse(self, alpha):
        return (2.0 / math.pi) * torch.arccos((alpha - self.eps) / (1.0 - self.eps))

    def config(self):
        return {"name": self.name, "eps": self.eps}


SCHEDULES: Dict[str, Callable[..., Schedule]] = {
    "linear": Linear,
    "loglinear": LogLinear,
    "polynomial": Polynomial,
    "geometric": Geometric,
    "cosine": Cosine,
    "mdlm-cosine": MDLMCosine,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by name, e.g. ``get_schedule("polynomial", w=3.0)``."""
    if isinstance(name, Schedule):
        return name
    if name not in SCHEDULES:
        raise MaskdiffError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as err:
        raise MaskdiffError(f"bad arguments for schedule {name!r}: {err}") from None


def time_grid(steps: int, kind: str = "uniform", dtype=torch.float64) -> Tensor:
    """Times t_0 = 0 < t_1 < ... < t_T = 1 for a T-step reverse process.

    ``uniform``: t_k = k / T. ``cosine``: MD4's grid t_k = cos(pi/2 (1 - k/T)), denser near t = 1.
    """
    if steps < 1:
        raise MaskdiffError(f"the number of steps must be at least 1, got {steps}")
    u = torch.arange(steps + 1, dtype=dtype) / steps
    if kind == "uniform":
        return u
    if kind == "cosine":
        grid = torch.cos(0.5 * math.pi * (1.0 - u))
        grid[0], grid[-1] = 0.0, 1.0
        return grid
    raise MaskdiffError(f"unknown time grid {kind!r}; choose one of: uniform, cosine")


class PerTokenPolynomial:
    """GenMD4's state-dependent schedule (MD4 Sec. 5): alpha_{t,v} = 1 - t^{w_v}, one exponent per value.

    alpha(t) for t of shape (...) returns (..., V): the probability that a token holding value v is
    still unmasked at t.
    """

    name = "genmd4"

    def __init__(self, exponents: Tensor):
        exponents = torch.as_tensor(exponents, dtype=torch.float64)
        if exponents.dim() != 1 or not bool((exponents > 0).all()):
            raise MaskdiffError("GenMD4 exponents must be a 1-D tensor of positive numbers, one per vocabulary entry")
        self.exponents = exponents

    @property
    def vocab_size(self) -> int:
        return self.exponents.numel()

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        return t.to(torch.float64)[..., None] ** self.exponents.to(t.device)

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - self.one_minus_alpha(t)

    def dalpha(self, t: Tensor) -> Tensor:
        w = self.exponents.to(t.device)
        return -w * t.to(torch.float64)[..., None] ** (w - 1.0)

    alpha_0 = 1.0
    alpha_1 = 0.0
