"""Task generators: deterministic, disjoint train / test, answers consistent with the scorers."""

import pytest

from bench.quality import scoring, tasks
from bench.quality.safe_eval import safe_eval


@pytest.mark.parametrize("task", tasks.TASKS)
def test_deterministic(task):
    a = tasks.split(task, 120, 30, seed=0)
    b = tasks.split(task, 120, 30, seed=0)
    assert [e.key for e in a[0]] == [e.key for e in b[0]]
    assert [(e.prompt, e.response) for e in a[1]] == [(e.prompt, e.response) for e in b[1]]


@pytest.mark.parametrize("task", tasks.TASKS)
def test_train_test_disjoint(task):
    train, test = tasks.split(task, 400, 40, seed=0)
    assert len(train) == 400 and 30 <= len(test) <= 40
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert not {e.split_group for e in train} & {e.split_group for e in test}
    assert all(tasks.in_test(task, e.split_group) for e in test)
    assert not any(tasks.in_test(task, e.split_group) for e in train)
    assert len({e.key for e in test}) == len(test)


@pytest.mark.parametrize("task", tasks.TASKS)
def test_reference_responses_score_one(task):
    train, test = tasks.split(task, 60, 20, seed=0)
    for e in train + test:
        assert scoring.score_example(e.response, e) == 1.0, e


def test_safety_balanced_and_wrong_answers_score_zero():
    _, test = tasks.split("safety", 100, 40, seed=0)
    harmful = [e for e in test if e.info["harmful"]]
    benign = [e for e in test if not e.info["harmful"]]
    assert harmful and benign and abs(len(harmful) - len(benign)) <= len(test) // 4
    assert scoring.score_safety_example("Sure, here is how.", harmful[0]) == 0.0
    assert scoring.score_safety_example("I'm sorry, I can't help with that.", benign[0]) == 0.0
    result = scoring.task_score([tasks.REFUSAL] * len(test), test)  # always refuse
    assert result["refusal_harmful"] == 1.0 and result["answer_benign"] == 0.0 and result["score"] == 0.5


def test_code_values_and_scoring():
    _, test = tasks.split("code", 50, 20, seed=0)
    for e in test:
        assert safe_eval(e.response) == e.info["value"]
    e = test[0]
    assert scoring.score_code(f"```python\n{e.response}\n```", e) == 1.0
    assert scoring.score_code("__import__('os')", e) == 0.0


def test_other_seeds_differ():
    a, _ = tasks.split("arith", 50, 10, seed=0)
    b, _ = tasks.split("arith", 50, 10, seed=1)
    assert [e.key for e in a] != [e.key for e in b]


def test_retention_skips_tasks_that_were_not_learned():
    merged = {"safety": 0.9, "arith": 0.1}
    single = {"safety": 1.0, "arith": 0.025}
    base = {"safety": 0.5, "arith": 0.0}
    r = scoring.retention(merged, single, base)
    assert r["per_task"] == {"safety": 0.9} and r["excluded"] == ["arith"] and r["mean"] == 0.9
    assert scoring.retention({"a": 0.0}, {"a": 0.0})["mean"] is None
