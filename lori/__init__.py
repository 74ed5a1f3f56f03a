"""LoRI: LoRA with a frozen seed-defined random A and a sparse, task-masked B (pure torch)."""

from .adapter import Adapter, AdapterMeta, ProjectionMismatch, apply_adapter, extract_adapter, masks_of
from .aggregate import fedavg, fedavg_b
from .baselines import (
    cat_merge,
    dare_merge,
    lora_fedavg,
    magnitude_prune,
    peft_linear_merge,
    task_arithmetic,
    ties_merge,
)
from .compat import check_compatible, check_shared_projection
from .config import DEFAULT_TARGETS, LoriConfig
from .inject import find_targets, inject, lori_layers, trainable_parameters
from .layer import LoriLinear
from .masks import MaskResult, calibrate_masks, layer_of, mask_overlap
from .merge import (
    PairOverlap,
    SubspaceOverlap,
    concat_merge,
    overlap_report,
    subspace_overlap,
    sum_merge,
)
from .peft_export import export_peft, export_peft_bytes, peft_state
from .projection import Segment, digest_of, projection, projection_digest, stacked_projection
from .serialization import (
    AdapterFormatError,
    adapter_from_bytes,
    adapter_to_bytes,
    load_adapter,
    save_adapter,
)

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
    "PairOverlap",
    "SubspaceOverlap",
    "cat_merge",
    "check_compatible",
    "check_shared_projection",
    "concat_merge",
    "dare_merge",
    "fedavg",
    "fedavg_b",
    "lora_fedavg",
    "magnitude_prune",
    "overlap_report",
    "peft_linear_merge",
    "subspace_overlap",
    "sum_merge",
    "task_arithmetic",
    "ties_merge",
    "AdapterFormatError",
    "adapter_from_bytes",
    "adapter_to_bytes",
    "export_peft",
    "export_peft_bytes",
    "load_adapter",
    "peft_state",
    "save_adapter",
]
