"""Object store, adapter publish protocol, registry and datasets (bytes in, bytes out).

    store = open_store("/var/lib/lori")                       # LocalStore (embedded default)
    store = open_store("s3://bucket/prefix?endpoint=127.0.0.1:8333&secure=false")   # S3Store
    publish_adapter(store, "a1", {"adapter.safetensors": blob}, {"family": "f", "task": "t"})
    read_adapter_blob(store, "a1", "adapter.safetensors")     # sha256-verified
    Registry(store).set_pointer("f", "production", "a1")      # atomic compare-and-set

See docs/store.md for the layout and design decisions. No torch/lori imports here.
"""

from .base import ConflictError, IntegrityError, ObjectNotFound, Store, StoreError, StoreUnavailable
from .datasets import (
    DatasetError,
    DatasetNotFound,
    read_dataset,
    read_dataset_bytes,
    read_dataset_manifest,
    upload_dataset,
    validate_jsonl,
)
from .factory import open_store
from .local import LocalStore
from .publish import (
    AdapterNotFound,
    adapter_ids,
    publish_adapter,
    read_adapter_blob,
    read_adapter_file,
    read_manifest,
)
from .registry import ANY, AdapterRecord, LineageEntry, Registry
from .retry import RetryPolicy
from .s3 import S3Store
from .s3config import S3Config, parse_s3_url

__all__ = [
    "ANY",
    "AdapterNotFound",
    "AdapterRecord",
    "ConflictError",
    "DatasetError",
    "DatasetNotFound",
    "IntegrityError",
    "LineageEntry",
    "LocalStore",
    "ObjectNotFound",
    "Registry",
    "RetryPolicy",
    "S3Config",
    "S3Store",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "adapter_ids",
    "open_store",
    "parse_s3_url",
    "publish_adapter",
    "read_adapter_blob",
    "read_adapter_file",
    "read_dataset",
    "read_dataset_bytes",
    "read_dataset_manifest",
    "read_manifest",
    "upload_dataset",
    "validate_jsonl",
]
