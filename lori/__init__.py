"""LoRI: LoRA with a frozen seed-defined random A and a sparse, task-masked B (pure torch)."""

from .adapter import Adapter, AdapterMeta, ProjectionMismatch, apply_adapter, extract_adapter, masks_of
from .config import DEFAULT_TARGETS, LoriConfig
from .inject import find_targets, inject, lori_layers, trainable_parameters
from .layer import LoriLinear
from .masks import MaskResult, calibrate_masks, layer_of, mask_overlap
from .projection import Segment, digest_of, projection, projection_digest, stacked_projection

__all__ = [
    "DEFAULT_TARGETS",
    "Adapter",
    "AdapterMeta",
    "LoriConfig",
    "LoriLinear",
    "MaskResult",
    "ProjectionMismatch",
    "Segment",
    "apply_adapter",
    "calibrate_masks",
    "digest_of",
    "extract_adapter",
    "find_targets",
    "inject",
    "layer_of",
    "lori_layers",
    "mask_overlap",
    "masks_of",
    "projection",
    "projection_digest",
    "stacked_projection",
    "trainable_parameters",
]
