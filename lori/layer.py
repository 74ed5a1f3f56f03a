"""The LoRI layer: a frozen linear layer plus a seed-defined, masked low-rank update.

    y = W x + s * B_eff (A x),      B_eff = B_base + (B ⊙ M),      s = alpha / r

- ``A`` (r x d_in): frozen, a non-persistent buffer regenerated from the seed (never saved).
- ``B`` (d_out x r): the trainable part, in one of three modes:
    * ``dense``  (LoRI-D): a full (d_out, r) parameter;
    * ``sparse`` (LoRI-S): only the masked entries are a parameter, ``values`` (nnz,), with
      their flat indices into the (d_out * r) grid in an int64 buffer; entries outside M are
      structurally zero, and optimizer state is as large as ``values``;
    * ``frozen``: nothing trainable.
- ``B_base`` (d_out x r, optional): a frozen contribution from earlier tasks (continual updates).
  Training the trainable part never touches it, so protected coordinates stay bit-identical.

Trainable values are kept in float32 (master weights) and cast to the activation dtype in the
forward pass, so the same layer runs in fp32 or bf16, on CPU or CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("dense", "sparse", "frozen")


def is_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 ``Conv1D``: weight stored (d_in, d_out), y = x W + b."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(d_out, d_in) of an ``nn.Linear`` or a GPT-2 ``Conv1D``; TypeError for anything else."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if is_conv1d(module):
        d_in, d_out = module.weight.shape
        return d_out, d_in
    raise TypeError(f"{type(module).__name__} is not a linear layer (nn.Linear or transformers Conv1D)")


class LoriLinear(nn.Module):
    """Wraps a frozen linear layer; see the module docstring for the formula."""

    def __init__(self, base: nn.Module, projection: torch.Tensor, alpha: float) -> None:
        super().__init__()
        d_out, d_in = linear_shape(base)
        rank, a_in = projection.shape
        if a_in != d_in:
            raise ValueError(f"projection has d_in={a_in}, layer has d_in={d_in}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.out_features, self.in_features, self.rank = d_out, d_in, rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        device = base.weight.device
        # A stays float32 (its digest is over float32 values); forward casts it to the activation dtype
        self.register_buffer("lori_A", projection.to(device=device, dtype=torch.float32), persistent=False)
        self.register_buffer("lori_B_base", None, persistent=False)
        self.register_buffer("lori_mask_base", None, persistent=False)
        self.register_buffer("lori_index", None, persistent=False)
        self.lori_B: nn.Parameter | None = None
        self.lori_values: nn.Parameter | None = None
        self.mode = "frozen"
        self.set_dense()

    # ----------------------------------------------------------------- state
    @property
    def _device(self) -> torch.device:
        return self.lori_A.device

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(self.out_features, self.rank, dtype=torch.float32, device=self._device)

    def trainable_delta(self) -> torch.Tensor:
        """B ⊙ M, the trainable part as a dense (d_out, r) float32 tensor (differentiable)."""
        if self.mode == "dense":
            return self.lori_B
        if self.mode == "sparse":
            flat = self.lori_values.new_zeros(self.out_features * self.rank)
            return flat.scatter(0, self.lori_index, self.lori_values).view(self.out_features, self.rank)
        return self._zeros()

    def effective_b(self) -> torch.Tensor:
        """B_eff = B_base + B ⊙ M, (d_out, r) float32."""
        delta = self.trainable_delta()
        return delta if self.lori_B_base is None else self.lori_B_base + delta

    def trainable_mask(self) -> torch.Tensor | None:
        """M as a (d_out, r) bool tensor; all-True in dense mode, None when frozen."""
        if self.mode == "dense":
            return torch.ones(self.out_features, self.rank, dtype=torch.bool, device=self._device)
        if self.mode == "sparse":
            mask = torch.zeros(self.out_features * self.rank, dtype=torch.bool, device=self._device)
            mask[self.lori_index] = True
            return mask.view(self.out_features, self.rank)
        return None

    def _clear_trainable(self) -> None:
        self.lori_B = None
        self.lori_values = None
        self.lori_index = None

    def _check_b(self, b: torch.Tensor, what: str) -> torch.Tensor:
        if tuple(b.shape) != (self.out_features, self.rank):
            raise ValueError(f"{what} has shape {tuple(b.shape)}, expected {(self.out_features, self.rank)}")
        return b.detach().to(device=self._device, dtype=torch.float32)

    def set_dense(self, init: torch.Tensor | None = None) -> None:
        """LoRI-D: the whole B trainable, starting from ``init`` (default zeros)."""
        start = self._zeros() if init is None else self._check_b(init, "init").clone()
        self._clear_trainable()
        self.lori_B = nn.Parameter(start)
        self.mode = "dense"

    def set_sparse(self, mask: torch.Tensor, init: torch.Tensor | None = None) -> None:
        """LoRI-S: only entries where ``mask`` is True are trainable, starting from ``init[mask]`` (default 0)."""
        if tuple(mask.shape) != (self.out_features, self.rank) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool {(self.out_features, self.rank)}, got {mask.dtype} {tuple(mask.shape)}")
        index = torch.nonzero(mask.reshape(-1).to(self._device), as_tuple=False).view(-1)  # sorted
        values = torch.zeros(index.numel(), dtype=torch.float32, device=self._device)
        if init is not None:
            values = self._check_b(init, "init").reshape(-1)[index].clone()
        self._clear_trainable()
        self.lori_index = index
        self.lori_values = nn.Parameter(values)
        self.mode = "sparse"

    def set_base(self, b: torch.Tensor | None, mask: torch.Tensor | None = None) -> None:
        """Replace the frozen contribution B_base and its support mask (None: dense / removed)."""
        self.lori_B_base = None if b is None else self._check_b(b, "B_base").clone()
        if mask is not None:
            if tuple(mask.shape) != (self.out_features, self.rank) or mask.dtype != torch.bool:
                raise ValueError(f"base mask must be bool {(self.out_features, self.rank)}, got {mask.dtype} {tuple(mask.shape)}")
            mask = mask.to(self._device).clone()
        self.lori_mask_base = mask

    def support_mask(self) -> torch.Tensor | None:
        """Coordinates this layer's adapter may use: base mask ∪ M; None means dense (all of B)."""
        if self.mode == "dense" or (self.lori_B_base is not None and self.lori_mask_base is None):
            return None
        trainable = self.trainable_mask()
        if self.lori_mask_base is None:
            return trainable if trainable is not None else torch.zeros(
                self.out_features, self.rank, dtype=torch.bool, device=self._device
            )
        return self.lori_mask_base if trainable is None else self.lori_mask_base | trainable

    def drop_trainable(self) -> None:
        """Discard the trainable part (without folding it into B_base) and stop training."""
        self._clear_trainable()
        self.mode = "frozen"

    def freeze(self) -> None:
        """Fold the trainable part into B_base and stop training: B_base <- B_eff, mask <- support."""
        with torch.no_grad():
            folded = self.effective_b().detach().clone()
        support = self.support_mask()
        self._clear_trainable()
        self.lori_B_base = folded
        self.lori_mask_base = support
        self.mode = "frozen"

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s * B_eff A, (d_out, d_in) float32."""
        return self.scaling * self.effective_b().detach() @ self.lori_A.float()

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.mode == "frozen" and self.lori_B_base is None:
            return out
        dtype = out.dtype
        # s folded into the small (d_out, r) B and the add fused into one GEMM: no extra pass over
        # the (..., d_out) activations for the scaling or the residual add, forward or backward
        b = (self.effective_b() * self.scaling).to(dtype)  # (d_out, r)
        z = F.linear(x.to(dtype), self.lori_A.to(dtype))  # (..., r)
        flat = torch.addmm(out.reshape(-1, self.out_features), z.reshape(-1, self.rank), b.t())  # (N, d_out)
        return flat.view(out.shape)

    def extra_repr(self) -> str:
        nnz = self.lori_values.numel() if self.mode == "sparse" else None
        return f"d_in={self.in_features}, d_out={self.out_features}, r={self.rank}, s={self.scaling:g}, mode={self.mode}, nnz={nnz}"
