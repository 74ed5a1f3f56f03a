"""RecipeConfig validation and JSONL data loading / tokenization of the recipe."""

from __future__ import annotations

import json

import pytest

from lori import LoriConfig
from worker.recipe import RecipeConfig, load_examples, tokenize_example
from worker.recipe.data import IGNORE, BatchOrder, collate


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"method": "lora"}, "method", "'lora'"),
        ({"dense_steps": 0}, "dense_steps", "0"),
        ({"sparse_steps": 0}, "sparse_steps", "0"),
        ({"dense_lr": -1.0}, "dense_lr", "-1.0"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"max_length": 1}, "max_length", "1"),
        ({"eval_limit": 0}, "eval_limit", "0"),
        ({"device": "tpu"}, "device", "'tpu'"),
        ({"base_model": ""}, "base_model", "''"),
        ({"protect": "yes"}, "protect", "'yes'"),
    ],
)
def test_bad_recipe_config_names_field_and_value(overrides, field, value):
    with pytest.raises(ValueError, match=rf"^{field}={value}"):
        RecipeConfig(**{"base_model": "m", **overrides})


@pytest.mark.parametrize(
    ("lori", "field"), [({"sparsity": 1.0}, "sparsity"), ({"rank": 0}, "rank"), ({"granularity": "row"}, "granularity")]
)
def test_bad_lori_config_names_field(lori, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        RecipeConfig(base_model="m", lori=LoriConfig(**lori))


def test_lori_d_allows_zero_sparse_steps():
    cfg = RecipeConfig(base_model="m", method="lori-d", dense_steps=3, sparse_steps=0)
    assert cfg.total_steps == 3
    assert RecipeConfig(base_model="m", dense_steps=3, sparse_steps=4).total_steps == 7


def test_load_examples_from_path_bytes_and_lines(tmp_path):
    rows = [{"prompt": "a", "response": "b"}, {"text": "plain"}]
    text = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    assert load_examples(path) == rows
    assert load_examples(str(path)) == rows
    assert load_examples(text.encode()) == rows
    assert load_examples(text.splitlines()) == rows


def test_bad_json_names_line_number():
    lines = [json.dumps({"text": "ok"}), json.dumps({"text": "ok"}), "{not json"]
    with pytest.raises(ValueError, match=r"^line 3: invalid JSON"):
        load_examples(lines)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p"}, r"line 2: missing field 'response'"),
        ({"response": "r"}, r"line 2: missing field 'prompt'"),
        ({"prompt": 1, "response": "r"}, r"line 2: field 'prompt' must be a string"),
        ({"text": ""}, r"line 2: field 'text'"),
        ([1, 2], r"line 2: expected a JSON object"),
    ],
)
def test_bad_field_names_line_and_field(row, message):
    with pytest.raises(ValueError, match=message):
        load_examples([json.dumps({"text": "fine"}), json.dumps(row)])


def test_empty_data_is_rejected():
    with pytest.raises(ValueError, match="no examples"):
        load_examples(b"\n\n")


def test_tokenization_masks_prompt_and_padding(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, labels = tokenize_example(tok, {"prompt": "copy: red =", "response": " red"}, max_length=64)
    n_prompt = len(tok("copy: red =")["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == " red"
    text_ids, text_labels = tokenize_example(tok, {"text": "hello world"}, max_length=64)
    assert text_ids == text_labels and text_ids[-1] == tok.eos_token_id
    cut, _ = tokenize_example(tok, {"text": "hello world " * 20}, max_length=8)
    assert len(cut) == 8
    batch = collate([(ids, labels), (text_ids, text_labels)], pad=tok.pad_token_id)
    short = 1 if len(text_ids) < len(ids) else 0
    n = min(len(ids), len(text_ids))
    assert batch["labels"][short, n:].eq(IGNORE).all()
    assert batch["attention_mask"][short, n:].eq(0).all()
    assert batch["input_ids"][short, n:].eq(tok.pad_token_id).all()


def test_batch_order_resumes_exactly():
    a = BatchOrder(7, 3, seed=5)
    for _ in range(4):
        a.next()
    b = BatchOrder(7, 3, seed=99)
    b.restore(a.state())
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]
    first = BatchOrder(7, 3, seed=5)
    assert sorted(first.next() + first.next() + first.next()[:1]) == list(range(7))
