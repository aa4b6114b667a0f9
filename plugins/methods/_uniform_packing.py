r"""Uniformly packed particles in the Poincaré ball: HACK's first stage (Guo et al., "Unsupervised
Feature Learning with Emergent Data-Driven Prototypicality", arXiv 2307.01421, Sec. 4.2).

N particles start as tangent vectors :math:`u_i \sim U(\pm 0.01)^d`, live on the ball as
:math:`x_i = \exp_0(\mathrm{clip}_{15}(u_i))` (``ToPoincare``, c = 1) and are pushed apart by the
repulsion energy over the pairs closer than twice the particle radius r,

.. math::
    E_{rep} = \operatorname{mean}_{i \ne j,\; d_{ij} < 2r} \; c_k\big(\max(d_{ij}, 0.01)^{-k} - (2r)^{-k}\big),
    \qquad c_k = \frac{(2r)^{k+1}}{k},

(:func:`repulsion_energy`; the released ``losses.repulsion_loss`` with its ``clip_v = 0.01``,
averaged as ``hyperbolic_uniform_loss``), kept inside the ball by the boundary term
:math:`100\cdot\operatorname{mean}_i\,\mathrm{relu}(\|u_i\| - \tanh 15 + 0.1)` on the tangent vectors
(released ``boundary_loss``), one full-batch SGD step per epoch (:func:`pack_particles`).

The particle radius gives each particle an equal share of the volume of the ball of hyperbolic
radius R in which the particles may lie (:func:`particle_radius`). The released code computes it
with the area of a hyperbolic *disc*, which only holds in 2-D; :func:`log_ball_volume` is the
volume of a geodesic ball in any dimension (equal to the disc area in 2-D).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from harness.geometry import ToPoincare
from harness.progress import Progress

PACK_INITS = ("released", "uniform")
PACK_OPTIMIZERS = ("sgd", "adam")
#: Largest number of entries of one (rows × N) block of pair quantities (float32: 64 MiB each).
BLOCK_ELEMENTS = 1 << 24


def _log_sinh(s):
    """log sinh s for s > 0 without overflow (numpy arrays or floats)."""
    import numpy as np

    s = np.asarray(s, dtype=np.float64)
    # sinh is exact below 20; above, sinh s = e^s (1 - e^{-2s}) / 2
    small, large = np.minimum(s, 20.0), np.maximum(s, 20.0)
    return np.where(s < 20.0, np.log(np.sinh(small)), large + np.log1p(-np.exp(-2.0 * large)) - math.log(2.0))


def log_ball_volume(rho: float, *, dim: int, c: float = 1.0) -> float:
    r"""log of the volume of a geodesic ball of radius ``rho`` in the ``dim``-dimensional hyperbolic
    space of curvature ``-c``:

    .. math::
        V_d(\rho) = \Omega_{d-1}\int_0^\rho \Big(\frac{\sinh(\sqrt c\,t)}{\sqrt c}\Big)^{d-1} dt,
        \qquad \Omega_{d-1} = \frac{2\pi^{d/2}}{\Gamma(d/2)}

    (the sphere of radius t has area :math:`\Omega_{d-1}(\sinh(\sqrt c t)/\sqrt c)^{d-1}`; Ratcliffe,
    "Foundations of Hyperbolic Manifolds", §3.4). In 2-D this is the disc area
    :math:`\frac{4\pi}{c}\sinh^2(\sqrt c\,\rho/2)`. Computed in log space (the volume of the ball of
    radius 30 in 64 dimensions is about :math:`e^{1890}`): the integrand is divided by its value at
    the upper end before adaptive quadrature (scipy ``quad``).
    """
    import numpy as np
    from scipy.integrate import quad

    if dim < 1:
        raise ValueError(f"log_ball_volume: dim must be >= 1, got {dim}")
    if not (c > 0 and rho > 0):
        raise ValueError(f"log_ball_volume: need c > 0 and rho > 0, got c={c}, rho={rho}")
    n = dim - 1
    a = math.sqrt(c) * rho  # ∫_0^ρ (sinh(√c t)/√c)^n dt = c^{-(n+1)/2} ∫_0^a sinh^n s ds
    log_omega = math.log(2.0) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)
    if n == 0:
        log_int = math.log(a)
    else:
        top = float(_log_sinh(a))
        # ∫_0^a sinh^n s ds = a sinh^n(a) ∫_0^1 (sinh(at)/sinh a)^n dt: the scaled integrand lies in [0, 1].
        scaled, _ = quad(lambda t: float(np.exp(n * (_log_sinh(a * t) - top))) if t > 0 else 0.0, 0.0, 1.0,
                         limit=200, epsabs=0.0, epsrel=1e-10)
        log_int = math.log(a) + n * top + math.log(scaled)
    return log_omega - (n + 1) / 2 * math.log(c) + log_int


def particle_radius(n: int, *, dim: int, R: float, c: float = 1.0) -> float:
    r"""The radius r of a geodesic ball holding 1/n of the volume of the ball of radius R:
    :math:`V_d(r) = V_d(R)/n` (:func:`log_ball_volume`, solved by Brent's method in log space).

    In 2-D, :math:`r = \frac{2}{\sqrt c}\operatorname{asinh}\sqrt{\sinh^2(\sqrt c R/2)/n}`: the
    released code's ``area_to_r(h_area(R) / n)``.
    """
    from scipy.optimize import brentq

    if n < 1:
        raise ValueError(f"particle_radius: need at least one particle, got n={n}")
    if n == 1:
        return float(R)
    target = log_ball_volume(R, dim=dim, c=c) - math.log(n)
    return float(brentq(lambda r: log_ball_volume(r, dim=dim, c=c) - target, R * 1e-12, R,
                        xtol=1e-14 * R, rtol=1e-13, maxiter=500))


def _group_index(groups: torch.Tensor | None, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    if groups is None:
        return torch.zeros(n, dtype=torch.long, device=device), 1
    if groups.shape != (n,) or groups.dtype.is_floating_point or (n and int(groups.min()) < 0):
        raise ValueError(f"groups must be non-negative integers of shape ({n},), got {tuple(groups.shape)} "
                         f"{groups.dtype}")
    return groups.to(device=device, dtype=torch.long), int(groups.max()) + 1 if n else 1


class _Repulsion(torch.autograd.Function):
    """Energy and its gradient in one blocked pass; the backward scales the stored gradient."""

    @staticmethod
    def forward(ctx, x, groups, radius, k, clip, c, block):  # type: ignore[override]
        energy, grad = _repulsion_blocks(x.detach(), groups, radius, k, clip, c, block, ctx.needs_input_grad[0])
        ctx.save_for_backward(grad if grad is not None else x.new_empty(0))
        return energy

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None, None, None, None, None, None


def _repulsion_blocks(x: torch.Tensor, groups: torch.Tensor, radius: torch.Tensor, k: float, clip: float,
                      c: float, block: int, want_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Σ_g of the mean pair energy of group g, and its gradient (see :func:`repulsion_energy`).

    Per pair, from explicit differences (exact for the near pairs that repel most; the matmul form
    of :func:`harness.geometry.pairwise_dist` would need its refinement pass for them, and the
    gradient needs δ and sinh, not only d):

    .. math:: \delta_{ij} = \frac{2c\|x_i - x_j\|^2}{\alpha_i\alpha_j},\quad \alpha_i = 1 - c\|x_i\|^2,\quad
              \sinh(\sqrt c\,d_{ij}) = \sqrt{\delta_{ij}(\delta_{ij} + 2)},\quad
              \sqrt c\,d_{ij} = \operatorname{log1p}\big(\delta_{ij} + \sinh(\sqrt c\,d_{ij})\big)

    (Ganea et al. 2018, Eq. 2: :math:`\cosh(\sqrt c\,d) = 1 + \delta`), so each pair costs one square
    root, one log1p and one power. With :math:`w_{ij} = \varphi'(d_{ij}) / (\sqrt c\,\sinh(\sqrt c\,d_{ij}))`,

    .. math:: \frac{\partial E}{\partial x_i} = \frac{2}{M_g}\Big[\frac{4c}{\alpha_i}\Big(x_i\sum_j
              \frac{w_{ij}}{\alpha_j} - \sum_j \frac{w_{ij}}{\alpha_j}x_j\Big)
              + \frac{2c\,x_i}{\alpha_i}\sum_j w_{ij}\delta_{ij}\Big]

    (:math:`\partial\delta/\partial x_i = 4c(x_i - x_j)/(\alpha_i\alpha_j) + 2c\,\delta\,x_i/\alpha_i`; the
    factor 2 counts both orders of each pair): two matrix products per block.
    """
    n, num_groups = x.shape[0], int(radius.shape[0])
    wd = x.dtype
    alpha = 1 - c * x.pow(2).sum(-1)
    if not bool((alpha > 0).all()):
        raise ValueError("repulsion_energy: particles lie on or outside the Poincaré ball of radius 1/sqrt(c); "
                         "map them inside with harness.geometry.expmap0 or project")
    # Only pairs inside a group interact: sort by group, then each group's rows meet its own columns.
    order = torch.argsort(groups, stable=True) if num_groups > 1 else None
    if order is not None:
        x, alpha = x[order], alpha[order]
    sizes = torch.bincount(groups, minlength=num_groups).tolist()
    two_r = (2 * radius).to(wd)  # (G,)
    c_k = (two_r.pow(k + 1) / k).tolist()
    floor = two_r.pow(-k).tolist()
    two_r = two_r.tolist()
    sc = c**0.5
    sums = [0.0] * num_groups
    counts = [0] * num_groups
    inv_alpha = 1 / alpha
    weighted = x * inv_alpha[:, None]
    partial = []  # per block: (group, rows, Σ_j w/α_j, Σ_j w x_j/α_j, Σ_j w δ) before the 1/M_g scaling
    start = 0
    for g, size in enumerate(sizes):
        cols = slice(start, start + size)
        step = max(1, min(block, (block * n) // max(size, 1)))  # rows per block: block·n pairs at most
        for s in range(start, start + size, step):
            e = min(start + size, s + step)
            rows = slice(s, e)
            delta = torch.zeros(e - s, size, dtype=wd, device=x.device)
            for j in range(x.shape[1]):  # ‖x_i - x_j‖² coordinate by coordinate: no (b, n, d) temporary
                diff = x[rows, j, None] - x[None, cols, j]
                delta.addcmul_(diff, diff)
            delta.mul_((2 * c) * inv_alpha[rows, None]).mul_(inv_alpha[None, cols])
            sinh = torch.addcmul(delta, delta, delta, value=0.5).mul_(2).sqrt_()  # √(δ² + 2δ)
            d = torch.log1p(delta + sinh).div_(sc)
            mask = d < two_r[g]
            diag = torch.arange(e - s, device=x.device)
            mask[diag, diag + (s - start)] = False  # not the particle itself
            pairs = mask.sum(1)
            power = d.clamp_min(clip).pow_(-k).mul_(mask)  # max(d, clip)^{-k} on the repelling pairs
            # Σ c_k (p_ij - (2r)^{-k}) over the block's repelling pairs
            sums[g] += c_k[g] * (float(power.sum(dtype=torch.float64)) - floor[g] * int(pairs.sum()))
            counts[g] += int(pairs.sum())
            if want_grad:
                # φ'(d) = -k c_k d^{-k-1} where d > clip (the clamp has no gradient below it); w = φ'/(√c sinh).
                w = power.mul_(d > clip).div_(d.mul_(sinh).clamp_min_(torch.finfo(wd).tiny))
                w.mul_(-k * c_k[g] / sc)
                partial.append((g, rows, w @ inv_alpha[cols], w @ weighted[cols], (w * delta).sum(1)))
        start += size
    total = torch.tensor(sum(sg / max(cg, 1) for sg, cg in zip(sums, counts)), dtype=wd, device=x.device)
    grad = None
    if want_grad:
        grad = torch.zeros_like(x)
        for g, rows, w_alpha, w_x, w_delta in partial:
            xi, ai = x[rows], inv_alpha[rows, None]
            grad[rows] = (4 * c * ai * (xi * w_alpha[:, None] - w_x) + 2 * c * xi * ai * w_delta[:, None]) \
                * (2 / max(counts[g], 1))
        if order is not None:
            grad = torch.empty_like(grad).index_copy_(0, order, grad)
    return total, grad


def repulsion_energy(x: torch.Tensor, *, radius: float | torch.Tensor, k: float, groups: torch.Tensor | None = None,
                     clip: float = 0.01, c: float = 1.0, block: int | None = None) -> torch.Tensor:
    r"""HACK's repulsion energy of particles ``x`` (N, d) on the Poincaré ball (Sec. 4.2; released
    ``hyperbolic_uniform_loss`` with ``repulsion_loss``), summed over groups of particles:

    .. math::
        E = \sum_g \frac{1}{M_g}\sum_{\substack{i \ne j \in g\\ d_{ij} < 2r_g}}
            c_k\big(\max(d_{ij}, \mathrm{clip})^{-k} - (2r_g)^{-k}\big),\qquad c_k = \frac{(2r_g)^{k+1}}{k}

    over ordered pairs, :math:`M_g` of them (a group without such pairs adds 0). ``groups`` (N,) are
    group ids (None: one group); ``radius`` a float or one value per group. The pairs are never
    all in memory: rows are processed in blocks of ``block`` (default: :data:`BLOCK_ELEMENTS` / N),
    energy and gradient in the same pass (memory O(block·N)).
    """
    if x.dim() != 2:
        raise ValueError(f"repulsion_energy: x must be (N, d), got {tuple(x.shape)}")
    n = x.shape[0]
    groups, num_groups = _group_index(groups, n, x.device)
    radius = torch.as_tensor(radius, dtype=torch.float64, device=x.device).reshape(-1)
    if radius.numel() == 1:
        radius = radius.expand(num_groups)
    if radius.numel() != num_groups or not bool((radius > 0).all()):
        raise ValueError(f"repulsion_energy: radius must be > 0, one value or one per group ({num_groups})")
    if not (k > 0 and clip > 0):
        raise ValueError(f"repulsion_energy: need k > 0 and clip > 0, got k={k}, clip={clip}")
    block = block or max(1, BLOCK_ELEMENTS // max(n, 1))
    return _Repulsion.apply(x, groups, radius, float(k), float(clip), float(c), int(block))


def boundary_penalty(u: torch.Tensor, *, bound: float, margin: float, groups: torch.Tensor | None = None
                     ) -> torch.Tensor:
    r"""HACK's boundary term on the tangent vectors (released ``boundary_loss``):
    :math:`\sum_g \operatorname{mean}_{i \in g}\mathrm{relu}(\|u_i\| - \mathrm{bound} + \mathrm{margin})`."""
    groups, num_groups = _group_index(groups, u.shape[0], u.device)
    excess = torch.relu(torch.linalg.vector_norm(u, dim=-1) - bound + margin)
    sums = excess.new_zeros(num_groups).index_add(0, groups, excess)
    sizes = torch.bincount(groups, minlength=num_groups).clamp_min(1).to(u.dtype)
    return (sums / sizes).sum()


def uniform_ball_tangents(n: int, *, dim: int, rho_max: float, c: float = 1.0,
                          generator: torch.Generator) -> torch.Tensor:
    r"""``n`` tangent vectors u whose points :math:`\exp_0(u)` are uniform (hyperbolic volume) on the
    geodesic ball of radius ``rho_max``, float32 ``(n, dim)``.

    Direction uniform on the sphere (a normalised Gaussian); distance ρ from the origin by inverting
    its distribution function :math:`F(\rho) = V_d(\rho)/V_d(\rho_{max})`, whose density is
    proportional to :math:`\sinh^{d-1}(\sqrt c\,\rho)` (the integrand of :func:`log_ball_volume`), tabulated on 4,096
    points in log space and inverted by linear interpolation (in 2-D it equals the closed form
    :math:`\rho = \frac{2}{\sqrt c}\operatorname{asinh}(\sqrt F\sinh(\sqrt c\,\rho_{max}/2))`). The
    exp map of ``ToPoincare`` puts :math:`\exp_0(u)` at distance :math:`2\|u\|` (any c), so
    :math:`\|u\| = \rho/2`.
    """
    import numpy as np

    if n < 1 or dim < 1 or not rho_max > 0:
        raise ValueError(f"uniform_ball_tangents: need n >= 1, dim >= 1, rho_max > 0; got {n}, {dim}, {rho_max}")
    direction = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    grid = np.linspace(0.0, rho_max, 4096)
    log_density = (dim - 1) * _log_sinh(np.maximum(math.sqrt(c) * grid, 1e-300))  # 1-D: constant
    density = np.exp(log_density - log_density[-1])
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    p = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
    rho = torch.as_tensor(np.interp(p, cdf, grid))
    return (direction * (rho / 2)[:, None]).float()


def pack_particles(sizes: list[int] | torch.Tensor, *, dim: int, steps: int, lr: float, k: float,
                   boundary_weight: float, boundary_margin: float, clip_r: float, repulsion_clip: float,
                   init_scale: float, generator: torch.Generator, device: torch.device | str = "cpu",
                   schedule: Callable[[float], float] | None = None, c: float = 1.0, init: str = "released",
                   optimizer: str = "sgd", progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Pack particles uniformly, each group on its own (HACK Sec. 4.2; released ``train_particle_simulation``).

    ``sizes``: the number of particles of each group (one group: all images; per class: the class
    sizes). Group g's particles repel each other only, with radius ``particle_radius(sizes[g], dim=dim,
    R=2·tanh(√c·clip_r))``. R is the hyperbolic radius of the region the boundary term leaves to the
    particles: the term bounds the tangent norms by ``bound = tanh(√c·clip_r)`` (the released
    ``Euclidean_r``) and :math:`d(0, \exp_0(u)) = 2\|u\|` (any c). The particles are mapped by
    ``ToPoincare(c, clip_r, riemannian=True)`` (hyptorch's default, kept by the released call).
    Loss = ``boundary_weight`` · :func:`boundary_penalty` + :func:`repulsion_energy`; ``steps``
    full-batch steps with learning rate ``lr · schedule(step / steps)``. Since groups share no term,
    this is exactly one packing per group run side by side.

    ``init``: ``released`` — tangent vectors U(±``init_scale``); ``uniform`` — a draw from the uniform
    (volume) distribution on the region (:func:`uniform_ball_tangents`). ``optimizer``: ``sgd``
    (released: momentum 0) or ``adam`` (torch Adam on the tangent vectors, which are Euclidean: their
    step no longer shrinks as 1/N, the mean's weight of one particle's pairs).

    ``progress``: a label under which the steps are reported (:class:`harness.progress.Progress`; the
    packing of N = 10,000 takes minutes), or None for silence.

    Returns the particles on the ball (N, dim), grouped in order (group 0 first), and their group ids.
    """
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"pack_particles: every group needs at least one particle, got sizes {sizes}")
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
    bound = math.tanh(math.sqrt(c) * clip_r)
    radius = torch.tensor([particle_radius(s, dim=dim, R=2 * bound, c=c) for s in sizes], dtype=torch.float64)
    if init == "released":
        u = (2 * torch.rand(sum(sizes), dim, generator=generator) - 1) * init_scale
    elif init == "uniform":
        u = uniform_ball_tangents(sum(sizes), dim=dim, rho_max=2 * (bound - boundary_margin), c=c, generator=generator)
    else:
        raise ValueError(f"pack_particles: init must be one of {PACK_INITS}, got {init!r}")
    if optimizer not in PACK_OPTIMIZERS:
        raise ValueError(f"pack_particles: optimizer must be one of {PACK_OPTIMIZERS}, got {optimizer!r}")
    u = u.to(device).requires_grad_(True)
    to_ball = ToPoincare(c=c, clip_r=clip_r, riemannian=True)
    opt = torch.optim.Adam([u], lr=lr) if optimizer == "adam" else torch.optim.SGD([u], lr=lr, momentum=0.0)
    bar = Progress(progress, steps) if progress else None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (schedule(step / steps) if schedule else 1.0)
        loss = boundary_weight * boundary_penalty(u, bound=bound, margin=boundary_margin, groups=groups) \
            + repulsion_energy(to_ball(u), radius=radius, k=k, groups=groups, clip=repulsion_clip, c=c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1, energy=float(loss.detach()))
    if bar is not None:
        bar.close()
    with torch.no_grad():
        return to_ball(u).detach(), groups
