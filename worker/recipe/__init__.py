"""The plain-Python LoRI training recipe (no Ray, no object store); see docs/contracts.md.

    cfg = RecipeConfig(base_model="path/to/hf-folder", task="arith", lori=LoriConfig(rank=32))
    recipe = LoriRecipe(cfg, on_event=print, base_adapter=None)
    recipe.setup()
    result = recipe.run(load_examples("train.jsonl"), load_examples("eval.jsonl"))
    recipe.cleanup()
"""

from .checkpoint import TrainState, state_from_bytes, state_to_bytes
from .config import METHODS, RecipeConfig
from .data import load_examples, tokenize_example, validate_example
from .evaluate import evaluate_examples, first_line, greedy_generate
from .result import Cancelled, RecipeResult
from .trainer import LoriRecipe, derive_seed

__all__ = [
    "METHODS",
    "Cancelled",
    "LoriRecipe",
    "RecipeConfig",
    "RecipeResult",
    "TrainState",
    "derive_seed",
    "evaluate_examples",
    "first_line",
    "greedy_generate",
    "load_examples",
    "state_from_bytes",
    "state_to_bytes",
    "tokenize_example",
    "validate_example",
]
