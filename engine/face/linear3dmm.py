"""The linear 3DMM the paper compares against: a mean plus a PCA basis, decoding a code to a
sample exactly where the nonlinear decoders do (networks.py), so the two are interchangeable.

`LinearMorphableModel` models one kind of sample: a shape (decoded to (B, V, 3) vertices) or a
UV texture (decoded to (B, H, W, 3)), chosen by `sample_shape`. Codes are in standard deviations
(code k scales component k by sqrt(eigenvalue k)), as `FaceModel.shape_from_coefficients`, so
code 0 is the mean and N(0, I) codes are samples of the model. A model without eigenvalues
(e.g. the BFM basis with 300W-LP's raw parameters) uses the raw coefficients as its code.

Constructors: `from_pca` fits the model to samples (SVD of the centred data), `from_face_model`
takes a FaceModel's real basis (the Surrey Face Model's 63 components), `from_bfm_basis` the
converted BFM basis (bfm.py). `fit_codes` finds the codes that reproduce given targets, in
closed form (least squares) or by gradient descent with Adam — the latter is how issue 7's
representation-power experiment fits the nonlinear decoders, so both models can be fitted the
same way and their L1 errors (`l1_error`) compared.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .bfm import BFMBasis
    from .facemodel import FaceModel

ArrayLike = np.ndarray | torch.Tensor


def _tensor(value: ArrayLike, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else value, dtype=dtype)



def adam_fit_codes(objective: Callable[[torch.Tensor], torch.Tensor], batch: int, size: int,
                   steps: int, lr: float) -> torch.Tensor:
    """(batch, size) codes minimising `objective(codes)`: Adam from 0 with cosine decay. The one
    optimiser of both the linear and the nonlinear code fits (engine/tasks/representation.py), so the
    representation-power comparison gives both models the same search."""
    code = torch.zeros(batch, size, requires_grad=True)
    optimizer = torch.optim.Adam([code], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            objective(code).backward()
            optimizer.step()
            schedule.step()
    return code.detach()

class LinearMorphableModel(nn.Module):
    """mean (D,) + basis (D, K) @ (code * sqrt(eigenvalues)), reshaped to `sample_shape`.

    * `basis` need not be orthonormal (the closed-form fit solves the least-squares problem);
    * `eigenvalues` (K,) are the variances of the components, None for raw coefficients;
    * `triangles` (F, 3) / `uv` (V, 2) describe the mesh of a shape model (optional);
    * `sample_shape` defaults to (D / 3, 3) (vertices; (D,) when D is not a multiple of 3);
      give (H, W, 3) for a texture model;
    * `explained_variance_ratio` (K,) is recorded by `from_pca`.
    """

    def __init__(self, mean: ArrayLike, basis: ArrayLike, eigenvalues: ArrayLike | None = None,
                 triangles: ArrayLike | None = None, uv: ArrayLike | None = None, *,
                 sample_shape: tuple[int, ...] | None = None,
                 explained_variance_ratio: ArrayLike | None = None, name: str = "linear 3DMM"):
        super().__init__()
        mean = _tensor(mean).reshape(-1)
        basis = _tensor(basis)
        D = mean.numel()
        if basis.ndim != 2 or basis.shape[0] != D or basis.shape[1] == 0:
            raise ValueError(f"{name}: basis must be ({D}, K) with K >= 1, got {tuple(basis.shape)}")
        K = basis.shape[1]
        if eigenvalues is None:
            scale = torch.ones(K, dtype=torch.float64)
        else:
            eig = _tensor(eigenvalues).reshape(-1)
            if eig.shape != (K,) or (eig < 0).any():
                raise ValueError(f"{name}: eigenvalues must be {K} variances >= 0, got {tuple(eig.shape)}")
            scale = eig.sqrt()
        for key, value in (("mean", mean), ("basis", basis), ("eigenvalues", scale)):
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: {key} contains NaN or Inf")
        if sample_shape is None:
            sample_shape = (D // 3, 3) if D % 3 == 0 else (D,)
        sample_shape = tuple(int(s) for s in sample_shape)
        if math.prod(sample_shape) != D:
            raise ValueError(f"{name}: sample_shape {sample_shape} does not hold {D} values")
        self.name = name
        self.sample_shape = sample_shape
        self.has_eigenvalues = eigenvalues is not None
        self.register_buffer("mean", mean.float())
        self.register_buffer("basis", basis.float())
        self.register_buffer("scale", scale.float())  # sqrt(eigenvalue): code units -> basis units
        if triangles is not None:
            tri = torch.as_tensor(np.asarray(triangles), dtype=torch.int32)
            V = D // 3
            if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= V:
                raise ValueError(f"{name}: triangles must be (F, 3) vertex ids in 0..{V - 1}")
        else:
            tri = None
        self.register_buffer("triangles", tri)
        if uv is not None:
            uv = _tensor(uv, torch.float32)
            if uv.shape != (D // 3, 2):
                raise ValueError(f"{name}: uv must be ({D // 3}, 2), got {tuple(uv.shape)}")
        self.register_buffer("uv", uv)
        self.explained_variance_ratio = (None if explained_variance_ratio is None
                                         else _tensor(explained_variance_ratio).reshape(-1).numpy())

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_pca(cls, samples: ArrayLike, k: int, triangles: ArrayLike | None = None,
                 uv: ArrayLike | None = None, name: str = "PCA model") -> "LinearMorphableModel":
        """PCA of `samples` (N, D) or (N, *sample_shape) keeping `k` components: the mean, the
        top right-singular vectors of the centred data (orthonormal), variances S^2 / (N - 1),
        and the fraction of the total variance each explains. Each component's sign is fixed
        (largest entry positive) so refits of the same data agree."""
        x = _tensor(samples)
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"samples must be (N >= 2, D...), got {tuple(x.shape)}")
        sample_shape = tuple(x.shape[1:]) if x.ndim > 2 else None
        x = x.reshape(x.shape[0], -1)
        N, D = x.shape
        if not 1 <= k <= min(N - 1, D):
            raise ValueError(f"k = {k}: {N} samples of {D} values support 1..{min(N - 1, D)} components")
        if not torch.isfinite(x).all():
            raise ValueError("samples contain NaN or Inf")
        mean = x.mean(0)
        _, singular, vt = torch.linalg.svd(x - mean, full_matrices=False)
        variances = singular.square() / (N - 1)
        basis = vt[:k].T
        largest = basis.abs().argmax(0)
        basis = basis * torch.sign(basis[largest, torch.arange(k)])
        total = variances.sum()
        ratio = variances[:k] / total if total > 0 else torch.zeros(k, dtype=torch.float64)
        return cls(mean, basis, variances[:k], triangles, uv, sample_shape=sample_shape,
                   explained_variance_ratio=ratio, name=name)

    @classmethod
    def from_face_model(cls, face_model: "FaceModel", k: int | None = None) -> "LinearMorphableModel":
        """The face model's own PCA shape basis (first `k` components; default all), with its
        mean, triangles and UVs."""
        if face_model.basis is None or face_model.eigenvalues is None:
            raise ValueError(f"{face_model.name} has no PCA basis (only models such as the Surrey Face "
                             "Model ship one; fit one with from_pca or convert the BFM with convert-bfm)")
        K = face_model.basis.shape[1] if k is None else k
        if not 1 <= K <= face_model.basis.shape[1]:
            raise ValueError(f"{face_model.name}: k = {k} outside 1..{face_model.basis.shape[1]}")
        return cls(face_model.mean_shape.reshape(-1), face_model.basis[:, :K], face_model.eigenvalues[:K],
                   face_model.triangles, face_model.uv, name=f"{face_model.name} (linear, {K} components)")

    @classmethod
    def from_bfm_basis(cls, basis: "BFMBasis", face_model: "FaceModel | None" = None) -> "LinearMorphableModel":
        """The converted BFM basis as one model whose code is [Shape_Para, Exp_Para] in 300W-LP's
        raw units (no eigenvalues), so `decode(code)` equals `bfm.dense_shape`. Triangles and UVs
        come from `face_model` when given (it must have the basis's vertex count)."""
        parts = [basis.shape_basis] + ([basis.exp_basis] if basis.exp_basis is not None else [])
        triangles, uv = basis.triangles, None
        if face_model is not None:
            if face_model.num_vertices != basis.num_vertices:
                raise ValueError(f"{face_model.name} has {face_model.num_vertices} vertices, the basis "
                                 f"{basis.num_vertices}")
            triangles, uv = face_model.triangles, face_model.uv
        return cls(basis.mean, np.concatenate(parts, 1), None, triangles, uv, name=f"BFM basis ({basis.source})")

    # ------------------------------------------------------------------ decoding

    @property
    def num_components(self) -> int:
        return self.basis.shape[1]

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """(B, K') codes -> (B, *sample_shape) samples; K' <= K uses the leading components."""
        if code.ndim != 2 or not 1 <= code.shape[1] <= self.num_components:
            raise ValueError(f"{self.name}: code must be (B, K') with K' in 1..{self.num_components}, "
                             f"got {tuple(code.shape)}")
        k = code.shape[1]
        flat = self.mean + (code.to(self.basis.dtype) * self.scale[:k]) @ self.basis[:, :k].T
        return flat.reshape(code.shape[0], *self.sample_shape)

    forward = decode  # a texture model is then a drop-in for networks.TextureDecoder

    def as_shape_decoder(self, std: ArrayLike | None = None) -> "LinearShapeDecoder":
        """This shape model behind the interface of networks' shape decoders (code -> dict with
        `vertices` and `shape_normalized`), normalised by `std` (V, 3) (default: the model's own
        per-coordinate standard deviation)."""
        return LinearShapeDecoder(self, std)

    def per_coordinate_std(self) -> torch.Tensor:
        """(D,) standard deviation of each value under the model: sqrt(sum_k basis^2 eigenvalue)."""
        return ((self.basis.double().square() @ self.scale.double().square()).sqrt()).float()

    # ------------------------------------------------------------------ fitting

    def _residual_and_mask(self, targets: torch.Tensor, mask: torch.Tensor | None):
        B = targets.shape[0]
        flat = targets.reshape(B, -1)
        if flat.shape[1] != self.mean.numel():
            raise ValueError(f"{self.name}: targets must be (B, {', '.join(map(str, self.sample_shape))}), "
                             f"got {tuple(targets.shape)}")
        if mask is None:
            return flat, None
        mask = mask.to(targets.dtype)
        while mask.ndim < targets.ndim:  # (B, H, W) masks of (B, H, W, 3) textures
            mask = mask[..., None]
        return flat, mask.expand_as(targets).reshape(B, -1)

    def fit_codes(self, targets: torch.Tensor, method: str = "closed_form", mask: torch.Tensor | None = None,
                  steps: int = 500, lr: float = 0.1, loss: str = "l2", regularization: float = 0.0,
                  k: int | None = None) -> torch.Tensor:
        """(B, k) codes whose decodings best match `targets` (B, *sample_shape), on the values
        where `mask` (broadcastable, e.g. (B, H, W) for textures) is non-zero.

        * "closed_form": least squares, minimising sum m (decode(c) - x)^2 + regularization |c|^2
          per sample (exact; weighted normal equations when there is a mask);
        * "gradient": Adam from code 0 for `steps` steps at `lr` (cosine-decayed to 0), on the mean
          masked squared ("l2") or absolute ("l1") error plus the same prior — the procedure the
          nonlinear decoders are fitted with (issue 7). For "l2" it converges to the closed form.
        """
        k = self.num_components if k is None else k
        if not 1 <= k <= self.num_components:
            raise ValueError(f"{self.name}: k = {k} outside 1..{self.num_components}")
        flat, m = self._residual_and_mask(targets, mask)
        if method == "closed_form":
            if loss != "l2":
                raise ValueError("the closed form exists for loss='l2' only; use method='gradient'")
            return self._fit_closed_form(flat, m, k, regularization).to(targets.dtype)
        if method == "gradient":
            return self._fit_gradient(flat, m, k, steps, lr, loss, regularization).to(targets.dtype)
        raise ValueError(f"unknown method {method!r}; choose 'closed_form' or 'gradient'")

    def _fit_closed_form(self, flat: torch.Tensor, m: torch.Tensor | None, k: int, reg: float) -> torch.Tensor:
        A = self.basis[:, :k].double() * self.scale[:k].double()  # (D, k): code -> offset
        r = flat.double() - self.mean.double()                     # (B, D)
        if m is None and reg == 0:
            # lstsq on A itself (not its normal equations) keeps the conditioning of A, and the
            # default driver copes with rank deficiency (zero-variance components)
            return torch.linalg.lstsq(A, r.T).solution.T
        eye = reg * torch.eye(k, dtype=torch.float64)
        if m is None:
            return torch.linalg.lstsq(A.T @ A + eye, (r @ A).T).solution.T
        m = m.double()
        codes = []
        for mb, rb in zip(m, r):  # one sample at a time: a (B, D, k) weighted copy of A can be GBs
            weighted = A * mb[:, None]
            codes.append(torch.linalg.lstsq(weighted.T @ A + eye, (weighted.T @ rb)[:, None]).solution[:, 0])
        return torch.stack(codes)

    def _fit_gradient(self, flat: torch.Tensor, m: torch.Tensor | None, k: int, steps: int, lr: float,
                      loss: str, reg: float) -> torch.Tensor:
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
        if steps < 1:
            raise ValueError("steps must be >= 1")
        target = flat.detach().float()
        weight = None if m is None else m.detach().float()
        count = target.numel() if weight is None else weight.sum().clamp(min=1)

        def objective(code: torch.Tensor) -> torch.Tensor:
            diff = self.decode(code).reshape(target.shape) - target
            err = diff.square() if loss == "l2" else diff.abs()
            if weight is not None:
                err = err * weight
            # sum / count keeps the scale of a mean; the prior is per sample like the closed form's
            return err.sum() / count + reg * code.square().sum() / count

        return adam_fit_codes(objective, target.shape[0], k, steps, lr)

    def l1_error(self, targets: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) mean absolute error of each decoding over its (masked) values — the paper's
        representation-power measure."""
        flat, m = self._residual_and_mask(targets, mask)
        err = (self.decode(codes).reshape(flat.shape).to(flat.dtype) - flat).abs()
        if m is None:
            return err.mean(1)
        return (err * m).sum(1) / m.sum(1).clamp(min=1)


class LinearShapeDecoder(nn.Module):
    """A linear shape model with the nonlinear shape decoders' interface: code (B, K) ->
    {"vertices" (B, V, 3), "shape_normalized" (B, V, 3) = (vertices - mean) / std}, and the
    `mean` / `std` buffers NonlinearFaceModel.normalize_shape reads."""

    def __init__(self, model: LinearMorphableModel, std: ArrayLike | None = None):
        super().__init__()
        if len(model.sample_shape) != 2 or model.sample_shape[1] != 3:
            raise ValueError(f"{model.name} decodes {model.sample_shape} samples, not (V, 3) vertices")
        self.model = model
        std = model.per_coordinate_std() if std is None else _tensor(std, torch.float32).reshape(-1)
        if std.numel() != model.mean.numel() or not (std > 0).all():
            raise ValueError(f"{model.name}: std must be {model.sample_shape} positive values")
        self.register_buffer("mean", model.mean.reshape(model.sample_shape).clone())
        self.register_buffer("std", std.reshape(model.sample_shape))

    def forward(self, code: torch.Tensor) -> dict[str, torch.Tensor]:
        vertices = self.model.decode(code)
        return {"vertices": vertices, "shape_normalized": (vertices - self.mean) / self.std}
