"""2D MLS-MPM with APIC transfer (spec §1): nine discs of liquid, jelly and snow falling into a box.

One MPM step per saved frame; frame k is the state *before* step k, so S in frame k is the stress of step k-1.
All particles are updated at once in torch; P2G scatters with `index_add_`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

N_GRID = 128
DX = 1.0 / N_GRID
INV_DX = float(N_GRID)
DT = 7.5e-5
GRAVITY = -50.0
P_VOL = (DX / 2) ** 2  # so P_VOL·4·INV_DX² = 1
RHO = (1.0, 0.5, 0.25)  # density of liquid, jelly, snow
LIQUID, JELLY, SNOW = 0, 1, 2
E, NU = 1e3, 0.2
MU0 = E / (2 * (1 + NU))  # ≈ 416.7
LAMBDA0 = E * NU / ((1 + NU) * (1 - 2 * NU))  # ≈ 277.8
FRICTION = 0.0
N_DISCS, RADIUS = 9, 0.075
OFFSETS = torch.tensor([(i, j) for i in range(3) for j in range(3)])  # 3×3 stencil, grid units
FIELDS = ("C", "F", "Jp", "S")  # per-particle fields saved besides positions and material


@dataclass
class State:
    """Per-particle state; matrices are (N, 2, 2)."""

    x: torch.Tensor
    v: torch.Tensor
    C: torch.Tensor
    F: torch.Tensor
    Jp: torch.Tensor
    S: torch.Tensor
    material: torch.Tensor
    mass: torch.Tensor


def initial_state(n_particles: int, seed: int, device: str | torch.device = "cpu") -> State:
    """Spec §1.2: n_particles/9 particles per disc, discs on a 3×3 lattice, 3 discs of each material.

    Drawn on the CPU from `seed`, then moved to `device`."""
    if n_particles % N_DISCS:
        raise ValueError(f"n_particles={n_particles} must be a multiple of {N_DISCS}")
    g = torch.Generator().manual_seed(seed)
    disc = torch.arange(n_particles) // (n_particles // N_DISCS)  # object index g = p // per_disc
    material = (torch.randperm(N_DISCS, generator=g) % 3)[disc]
    velocity = (torch.rand(N_DISCS, 2, generator=g) * 4 - 2)[disc]  # U[-2, 2] per component, one per disc
    row, col = disc // 3, disc % 3
    centre = torch.stack([0.2 + 0.25 * col, 0.375 + 0.25 * row], 1)
    r = RADIUS * torch.sqrt(torch.rand(n_particles, generator=g))  # uniform over the disc area
    theta = 2 * math.pi * torch.rand(n_particles, generator=g)
    x = centre + torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
    eye = torch.eye(2).repeat(n_particles, 1, 1)
    zero = torch.zeros(n_particles, 2, 2)
    mass = P_VOL * torch.tensor(RHO)[material]  # m_p = p_vol·ρ_T
    state = State(x=x, v=velocity, C=zero, F=eye, Jp=torch.ones(n_particles), S=zero.clone(),
                  material=material, mass=mass)
    return State(**{name: value.to(device) for name, value in vars(state).items()})


def stencil(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quadratic B-spline stencil: flat node index (N, 9), weight w_ij (N, 9), offset − fx (N, 9, 2) in grid units.

    Nodes outside the grid get weight 0 (and a valid dummy index)."""
    base = torch.floor(x * INV_DX - 0.5)  # base = floor(x·inv_dx − 0.5)
    fx = x * INV_DX - base
    w = torch.stack([0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1) ** 2, 0.5 * (fx - 0.5) ** 2], 1)  # (N, 3, 2)
    offsets = OFFSETS.to(x.device)
    weight = w[:, offsets[:, 0], 0] * w[:, offsets[:, 1], 1]  # w_ij = w_i,x · w_j,y
    node = base.long()[:, None, :] + offsets
    inside = ((node >= 0) & (node < N_GRID)).all(-1)
    flat = (node[..., 0] * N_GRID + node[..., 1]).clamp(0, N_GRID**2 - 1)
    return flat, weight * inside, offsets - fx[:, None, :]


def p2g(s: State, flat: torch.Tensor, weight: torch.Tensor, dpos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid mass m_i = Σ w·m_p (G,) and momentum Σ w·(m_p·v_p + A·(x_i − x_p)) (G, 2), with A = S + m_p·C."""
    A = s.S + s.mass[:, None, None] * s.C
    affine = torch.einsum("nab,nkb->nka", A, dpos * DX)  # A·(x_i − x_p), x_i − x_p = (offset − fx)·dx
    momentum = weight[..., None] * (s.mass[:, None, None] * s.v[:, None, :] + affine)
    grid_m = s.x.new_zeros(N_GRID**2).index_add_(0, flat.reshape(-1), (weight * s.mass[:, None]).reshape(-1))
    grid_mv = s.x.new_zeros(N_GRID**2, 2).index_add_(0, flat.reshape(-1), momentum.reshape(-1, 2))
    return grid_m, grid_mv


def grid_velocity(grid_m: torch.Tensor, grid_mv: torch.Tensor) -> torch.Tensor:
    """v_i = momentum/m_i + dt·g where m_i > 0, then separating slip walls in the 3-node border zones."""
    has_mass = grid_m > 0
    v = torch.where(has_mass[:, None], grid_mv / grid_m.clamp(min=1e-30)[:, None], 0.0)
    v[:, 1] += torch.where(has_mass, DT * GRAVITY, 0.0)  # nodes with no mass get no gravity
    idx = torch.arange(N_GRID, device=v.device)
    i, j = idx.repeat_interleave(N_GRID), idx.repeat(N_GRID)  # node (i, j) at flat index i·n_grid + j
    for axis, k in ((0, i), (1, j)):
        low, high = k < 3, k > N_GRID - 3
        normal = v[:, axis]
        outward = (low & (normal < 0)) | (high & (normal > 0))
        v[:, axis] = torch.where(outward, 0.0, normal)  # zero the outward normal component only
        v[:, 1 - axis] = torch.where(low | high, (1 - FRICTION) * v[:, 1 - axis], v[:, 1 - axis])  # tangential
    return v


def step(s: State) -> State:
    """One MLS-MPM step in the order of spec §1.3."""
    n = s.x.shape[0]
    eye = torch.eye(2, device=s.x.device).expand(n, 2, 2)
    liquid, jelly, snow = (s.material == m for m in (LIQUID, JELLY, SNOW))

    F = (eye + DT * s.C) @ s.F  # 1. F ← (I + dt·C)·F

    h = torch.where(jelly, 0.3, torch.exp(10 * (1 - s.Jp)))  # 2. hardening h = exp(10·(1 − Jp)); jelly 0.3
    mu = torch.where(liquid, 0.0, MU0 * h)  # μ = μ0·h, 0 for liquid
    lam = LAMBDA0 * h  # λ = λ0·h

    U, sig, Vh = torch.linalg.svd(F + 1e-6 * eye)  # 3. F + 1e-6·I = U·diag(σ)·Vᵀ
    su = torch.where(torch.linalg.det(U) < 0, -1.0, 1.0)  # det U < 0: flip U's last column and σ₂
    sv = torch.where(torch.linalg.det(Vh) < 0, -1.0, 1.0)  # det Vᵀ < 0: flip Vᵀ's last row and σ₂
    U = torch.stack([U[:, :, 0], U[:, :, 1] * su[:, None]], 2)
    Vh = torch.stack([Vh[:, 0], Vh[:, 1] * sv[:, None]], 1)
    sig = torch.stack([sig[:, 0], sig[:, 1] * su * sv], 1)
    sig = torch.where(sig < 1e-6, 1e-6 + 0.01 * (sig - 1e-6), sig)  # soft floor

    sig_old = sig  # 4. snow plasticity: clamp σ to [1 − 2.5e-2, 1 + 4.5e-3]
    sig = torch.where(snow[:, None], sig.clamp(1 - 2.5e-2, 1 + 4.5e-3), sig)
    Jp = torch.where(snow, s.Jp * (sig_old / sig).prod(1), s.Jp)  # Jp ← Jp·Π σ_old/σ (exactly 1 if not snow)

    J = sig.prod(1).clamp(min=1e-4)  # 5. J = Π σ ≥ 1e-4

    F_elastic = U @ torch.diag_embed(sig) @ Vh  # 6. F = U·diag(σ)·Vᵀ; liquid: F = √J·I
    F = torch.where(liquid[:, None, None], torch.sqrt(J)[:, None, None] * eye, F_elastic)

    R = U @ Vh  # 7. fixed-corotated Kirchhoff stress τ = 2μ(F − R)Fᵀ + λJ(J − 1)I
    tau = 2 * mu[:, None, None] * (F - R) @ F.transpose(1, 2) + (lam * J * (J - 1))[:, None, None] * eye
    S = -DT * P_VOL * 4 * INV_DX**2 * tau  # stored stress S = −dt·p_vol·4·inv_dx²·τ (= −dt·τ)

    s = State(x=s.x, v=s.v, C=s.C, F=F, Jp=Jp, S=S, material=s.material, mass=s.mass)
    flat, weight, dpos = stencil(s.x)  # 8. P2G
    grid_v = grid_velocity(*p2g(s, flat, weight, dpos))  # 9. grid update

    wv = weight[..., None] * grid_v[flat]  # 10. G2P: v_p = Σ w·v_i, C_p = 4·inv_dx·Σ w·v_i ⊗ (offset − fx)
    v = wv.sum(1)
    C = 4 * INV_DX * (wv[..., :, None] * dpos[..., None, :]).sum(1)

    x = s.x + DT * v  # 11. advection, no clamping
    return State(x=x, v=v, C=C, F=F, Jp=Jp, S=S, material=s.material, mass=s.mass)


def simulate_window(n_particles: int, frame_start: int, frame_stop: int, seed: int) -> dict[str, np.ndarray]:
    """Run until frame_stop and keep frames [frame_start, frame_stop): positions x (T, N, 2), the fields
    C, F, S (T, N, 4, row-major) and Jp (T, N, 1) as float32, and material (N,)."""
    s = initial_state(n_particles, seed)
    frames: dict[str, list[torch.Tensor]] = {k: [] for k in ("x", *FIELDS)}
    with torch.no_grad():
        for k in range(frame_stop):
            if k >= frame_start:  # frame k = state before step k
                for name in frames:
                    frames[name].append(getattr(s, name).reshape(n_particles, -1).clone())
            s = step(s)
    out = {name: torch.stack(v).numpy().astype(np.float32) for name, v in frames.items()}
    out["material"] = s.material.numpy().astype(np.int8)
    return out
