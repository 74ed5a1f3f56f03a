"""What the coordinator asks a worker to do: a training job or a federated task (frozen, validated).

    JobSpec        one task adapter: LoRI-D -> calibrate -> LoRI-S -> evaluate -> publish
                   (or a continual update on top of ``base_adapter_id``)
    FederatedSpec  one task trained by K clients over R rounds with exact FedAvg of B

Both are plain frozen dataclasses holding a ``worker.recipe.RecipeConfig`` (base model, task,
family, LoRI hyper-parameters incl. the projection seed, steps, learning rates, batch size, max
length, device). Validation happens in ``__post_init__``: a bad value raises ``ValueError`` that
names the field and shows the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.recipe import RecipeConfig

__all__ = ["FederatedSpec", "JobSpec"]


def _fail(name: str, value: object, why: str) -> None:
    raise ValueError(f"{name}={value!r}: {why}")


def _nonneg(name: str, value: object, *, integer: bool = False, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        _fail(name, value, "must be an integer" if integer else "must be a number")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        _fail(name, value, "must be > 0" if positive else "must be >= 0")


def _dataset(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value:
        _fail(name, value, "must be a dataset name in the store or a local JSONL path / folder")


@dataclass(frozen=True)
class JobSpec:
    """One training job (see docs/worker.md).

    ``dataset``: a dataset name in the store (``datasets/<name>/{train,eval}.jsonl``) or a local
    path (a ``.jsonl`` file, or a folder with ``train.jsonl`` and optionally ``eval.jsonl``).
    ``eval_dataset`` overrides the eval split. ``base_adapter_id``: continual update — start from
    that published adapter (same projection seed), protect its mask, train only free coordinates
    and publish the combined adapter with the base as parent. ``checkpoint_every``: optimizer
    steps between checkpoints (0: none). ``max_retries``: how often a job whose worker process
    died is restarted (it resumes from its last checkpoint).
    """

    recipe: RecipeConfig
    dataset: str
    eval_dataset: str | None = None
    base_adapter_id: str | None = None
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    checkpoint_every: int = 0
    max_retries: int = 2
    export_peft: bool = False
    kind: str = "job"

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, RecipeConfig):
            _fail("recipe", self.recipe, "must be a worker.recipe.RecipeConfig")
        _dataset("dataset", self.dataset)
        _dataset("eval_dataset", self.eval_dataset, optional=True)
        if self.base_adapter_id is not None and (not isinstance(self.base_adapter_id, str) or not self.base_adapter_id):
            _fail("base_adapter_id", self.base_adapter_id, "must be a non-empty adapter id or None")
        _nonneg("num_gpus", self.num_gpus)
        _nonneg("num_cpus", self.num_cpus)
        if self.num_gpus == 0 and self.num_cpus == 0:
            _fail("num_cpus", self.num_cpus, "a job needs at least some CPU or GPU")
        _nonneg("checkpoint_every", self.checkpoint_every, integer=True)
        _nonneg("max_retries", self.max_retries, integer=True)
        if not isinstance(self.export_peft, bool):
            _fail("export_peft", self.export_peft, "must be a bool")
        if self.kind != "job":
            _fail("kind", self.kind, "is fixed to 'job'")


@dataclass(frozen=True)
class FederatedSpec:
    """K clients x R rounds of one task; see docs/worker.md for the flow.

    Clients: either ``client_datasets`` (one dataset per client, e.g. each site's own data) or
    ``dataset`` + ``num_clients`` (client k gets the shard ``examples[k::K]``).

    Flow: ``dense_rounds`` LoRI-D rounds (every client starts from the global dense B) ->
    calibrate the mask on the global B (or use ``mask_adapter_id``'s mask) -> ``sparse_rounds``
    LoRI-S rounds from B = 0 restricted to the mask. ``local_steps`` optimizer steps per client
    and round (lr: the recipe's dense_lr / sparse_lr; batch size, max length from the recipe).

    A round waits ``deadline_s`` seconds; clients not done by then are cancelled and recorded as
    late. A round needs ``quorum`` accepted clients (an int, or a fraction of K when < 1), else
    the task fails (an int is a count, a float a fraction of K: 1.0 = every client). A client update is rejected (recorded, never aggregated) when its shape is
    wrong, it has non-finite values, its support leaves the task mask, or ||B_k - B_global||_F >
    ``max_delta_norm`` (None: no bound).

    Placement: ``client_resources[k]`` (e.g. ``{"site-a": 0.01}``, a custom Ray resource the
    site's node advertises) or ``client_node_ids[k]`` (a Ray node id, hard node affinity) pins
    client k to its site. ``client_fn``: optional replacement for the local training function
    (``worker.federated.train_client``; same signature ``(store, recipe_cfg, client_task,
    should_stop) -> (B_k, n_k, info)``), e.g. differential privacy, or fault injection in tests.
    """

    recipe: RecipeConfig
    client_datasets: tuple[str, ...] = ()
    dataset: str | None = None
    num_clients: int = 0
    eval_dataset: str | None = None
    dense_rounds: int = 1
    sparse_rounds: int = 1
    local_steps: int = 10
    quorum: int | float = 1.0
    deadline_s: float = 600.0
    max_delta_norm: float | None = None
    mask_adapter_id: str | None = None
    client_resources: tuple[dict | None, ...] | None = None
    client_node_ids: tuple[str | None, ...] | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 1
    export_peft: bool = False
    client_fn: Callable | None = field(default=None, compare=False)
    kind: str = "federated"

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, RecipeConfig):
            _fail("recipe", self.recipe, "must be a worker.recipe.RecipeConfig")
        if isinstance(self.client_datasets, list):
            object.__setattr__(self, "client_datasets", tuple(self.client_datasets))
        if self.client_datasets:
            if self.dataset is not None:
                _fail("dataset", self.dataset, "give either client_datasets or dataset + num_clients")
            for i, d in enumerate(self.client_datasets):
                _dataset(f"client_datasets[{i}]", d)
            if self.num_clients not in (0, len(self.client_datasets)):
                _fail("num_clients", self.num_clients, f"client_datasets names {len(self.client_datasets)} clients")
            object.__setattr__(self, "num_clients", len(self.client_datasets))
        else:
            _dataset("dataset", self.dataset)
            _nonneg("num_clients", self.num_clients, integer=True, positive=True)
        _dataset("eval_dataset", self.eval_dataset, optional=True)
        _nonneg("dense_rounds", self.dense_rounds, integer=True)
        _nonneg("sparse_rounds", self.sparse_rounds, integer=True)
        if self.dense_rounds + self.sparse_rounds == 0:
            _fail("dense_rounds", self.dense_rounds, "dense_rounds + sparse_rounds must be >= 1")
        if self.dense_rounds == 0 and self.sparse_rounds and self.mask_adapter_id is None:
            _fail("mask_adapter_id", None, "sparse rounds without dense rounds need a fixed mask")
        _nonneg("local_steps", self.local_steps, integer=True, positive=True)
        _nonneg("quorum", self.quorum, positive=True)
        if isinstance(self.quorum, int) and self.quorum > self.num_clients:
            _fail("quorum", self.quorum, f"an integer quorum must be in [1, {self.num_clients}]")
        if isinstance(self.quorum, float) and self.quorum > 1:
            _fail("quorum", self.quorum, "a float quorum is a fraction of the clients in (0, 1]")
        _nonneg("deadline_s", self.deadline_s, positive=True)
        if self.max_delta_norm is not None:
            _nonneg("max_delta_norm", self.max_delta_norm, positive=True)
        for name in ("client_resources", "client_node_ids"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(value)
            object.__setattr__(self, name, value)
            if len(value) != self.num_clients:
                _fail(name, value, f"needs one entry per client ({self.num_clients})")
        for i, res in enumerate(self.client_resources or ()):
            if res is not None and (
                not isinstance(res, dict)
                or not all(isinstance(k, str) and isinstance(v, (int, float)) and v > 0 for k, v in res.items())
            ):
                _fail(f"client_resources[{i}]", res, "must be None or a dict of resource name -> positive amount")
        _nonneg("num_cpus", self.num_cpus)
        _nonneg("num_gpus", self.num_gpus)
        _nonneg("max_retries", self.max_retries, integer=True)
        if self.client_fn is not None and not callable(self.client_fn):
            _fail("client_fn", self.client_fn, "must be callable or None")
        if self.kind != "federated":
            _fail("kind", self.kind, "is fixed to 'federated'")

    @property
    def rounds(self) -> int:
        return self.dense_rounds + self.sparse_rounds

    def quorum_count(self) -> int:
        """Accepted clients a round needs."""
        if isinstance(self.quorum, int):
            return self.quorum
        return max(1, math.ceil(self.quorum * self.num_clients - 1e-9))
