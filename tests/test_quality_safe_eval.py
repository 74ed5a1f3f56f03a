"""The code task's safe evaluator: whitelisted arithmetic only, bounded work, never exec/eval."""

import pytest

from bench.quality.safe_eval import EvalError, Limits, UnsafeExpression, safe_eval


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("3 + 4 * 5", 23),
        ("17 % 5", 2),
        ("7 ** 2", 49),
        ("-3 + +2", -1),
        ("max(12, 45)", 45),
        ("abs(3 - 10)", 7),
        ("len('banana')", 6),
        ("sum([1, 2, 3])", 6),
        ("min((4, 2, 9))", 2),
        ("17 // 5", 3),
        ("7 / 2", 3.5),
        ("  (1 + 2) * 3  ", 9),
    ],
)
def test_accepts_whitelisted_arithmetic(source, value):
    assert safe_eval(source) == value


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",  # call outside the whitelist
        "print(1)",
        "open('/etc/passwd')",
        "eval('1')",
        "(1).__class__",  # attribute
        "'abc'.upper()",
        "x + 1",  # name outside a call
        "abs",  # whitelisted name, but not called
        "max(*[1, 2])",  # starred
        "round(2.5, ndigits=0)",  # keyword / not whitelisted
        "[i for i in [1, 2]]",  # comprehension
        "lambda: 1",
        "(1, 2)[0]",  # subscript
        "1 if 2 else 3",
        "1 < 2",
        "x = 1",  # statement, not an expression
        "None",
        "b'abc'",
        "f'{1}'",
    ],
)
def test_rejects_everything_else(source):
    with pytest.raises(UnsafeExpression):
        safe_eval(source)


@pytest.mark.parametrize(
    "source",
    [
        "2 ** 100000",  # huge exponent
        "9 ** 9 ** 9",
        "10 ** 60 * 10 ** 60 * 10 ** 60 * 10 ** 60 * 10 ** 60",  # integer growth
        "'a' * 1000000",  # long string
        "[1] * 1000000",
        "1" + " + 1" * 200,  # long input
        "max(" + ", ".join(["1"] * 40) + ")",  # too many nodes / arguments
        "[" + ",".join(["1"] * 70) + "]",  # too many nodes
    ],
)
def test_limits_bound_work(source):
    with pytest.raises(UnsafeExpression):
        safe_eval(source)


def test_deep_nesting_rejected():
    deep = "-" * 40 + "1"  # 41 levels of unary minus in few characters
    with pytest.raises(UnsafeExpression, match="nesting"):
        safe_eval(deep)
    nested_calls = "abs(" * 20 + "1" + ")" * 20
    with pytest.raises(UnsafeExpression):
        safe_eval(nested_calls)


def test_long_input_rejected_before_parsing():
    with pytest.raises(UnsafeExpression, match="longer than"):
        safe_eval("1" * 201)
    assert safe_eval("1" * 5, Limits(max_chars=5)) == 11111


@pytest.mark.parametrize("source", ["1 / 0", "5 % 0", "len(5)", "(-8) ** 0.5", "1e308 * 10", "max([])"])
def test_failures_are_eval_errors(source):
    with pytest.raises(EvalError):
        safe_eval(source)


def test_syntax_errors_rejected():
    for source in ["", "1 +", "max(1,", "```python"]:
        with pytest.raises(UnsafeExpression):
            safe_eval(source)


def test_module_never_calls_eval_or_exec():
    import ast
    import inspect

    import bench.quality.safe_eval as module

    tree = ast.parse(inspect.getsource(module))
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}
