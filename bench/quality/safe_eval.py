"""A safe evaluator for model-written Python expressions (the code task's checker).

The model's output is parsed with ``ast.parse(mode="eval")`` and interpreted node by node here;
it is never passed to ``exec`` / ``eval`` / ``compile``. Only this grammar is accepted:

    expr := number | string | expr binop expr | (+|-) expr | [expr, ...] | (expr, ...)
          | f(expr, ...)        f in WHITELIST (abs, min, max, len, sum), positional args only
    binop := + - * / // % **

Anything else (names outside a call of a whitelisted function, attributes, subscripts,
comprehensions, lambdas, keywords, ...) is rejected. Limits bound the work and memory an
expression can cause: source length, node count, nesting depth, exponent size, integer size,
string / sequence length, argument count.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass

WHITELIST = {"abs": abs, "min": min, "max": max, "len": len, "sum": sum}


class UnsafeExpression(ValueError):
    """The expression uses something outside the whitelist or exceeds a limit."""


class EvalError(ValueError):
    """The expression is allowed but fails (division by zero, bad argument types, ...)."""


@dataclass(frozen=True)
class Limits:
    max_chars: int = 200
    max_nodes: int = 64
    max_depth: int = 16
    max_exponent: int = 64
    max_int_bits: int = 256
    max_seq_len: int = 256
    max_args: int = 8


DEFAULT_LIMITS = Limits()

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _depth(node: ast.AST) -> int:
    """Height of the AST (iterative, so a deep tree cannot exhaust the Python stack here)."""
    best, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        best = max(best, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(current))
    return best


class _Interpreter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def check_value(self, value: object) -> object:
        lim = self.limits
        if isinstance(value, bool):
            return value
        if not isinstance(value, (int, float, str, list, tuple)):
            raise EvalError(f"result of type {type(value).__name__} is not allowed")
        if isinstance(value, int) and value.bit_length() > lim.max_int_bits:
            raise UnsafeExpression(f"integer result exceeds {lim.max_int_bits} bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise EvalError("non-finite float result")
        if isinstance(value, (str, list, tuple)) and len(value) > lim.max_seq_len:
            raise UnsafeExpression(f"sequence longer than {lim.max_seq_len}")
        return value

    def _size(self, value: object) -> int:
        return len(value) if isinstance(value, (str, list, tuple)) else 1

    def binop(self, op: ast.operator, left: object, right: object) -> object:
        lim = self.limits
        if isinstance(op, ast.Pow):
            if not isinstance(right, (int, float)) or abs(right) > lim.max_exponent:
                raise UnsafeExpression(f"exponent must be a number with |e| <= {lim.max_exponent}")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if left.bit_length() * right > lim.max_int_bits:
                    raise UnsafeExpression(f"power exceeds {lim.max_int_bits} bits")
        if isinstance(op, ast.Mult):
            seq = left if isinstance(left, (str, list, tuple)) else right
            count = right if seq is left else left
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                if len(seq) * max(count, 0) > lim.max_seq_len:
                    raise UnsafeExpression(f"repetition longer than {lim.max_seq_len}")
            elif isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > lim.max_int_bits + 1:
                    raise UnsafeExpression(f"product exceeds {lim.max_int_bits} bits")
        if isinstance(op, ast.Add) and self._size(left) + self._size(right) > lim.max_seq_len:
            raise UnsafeExpression(f"concatenation longer than {lim.max_seq_len}")
        if isinstance(op, ast.Mod) and isinstance(left, str):
            raise UnsafeExpression("string formatting with % is not allowed")
        try:
            return _BINOPS[type(op)](left, right)
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise EvalError(f"{type(exc).__name__}: {exc}") from None

    def eval(self, node: ast.AST) -> object:
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (bool, int, float, str)):
                return self.check_value(node.value)
            raise UnsafeExpression(f"constant of type {type(node.value).__name__} is not allowed")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.eval(node.left), self.eval(node.right)
            return self.check_value(self.binop(node.op, left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            operand = self.eval(node.operand)
            try:
                return self.check_value(_UNARY[type(node.op)](operand))
            except TypeError as exc:
                raise EvalError(str(exc)) from None
        if isinstance(node, (ast.List, ast.Tuple)) and isinstance(node.ctx, ast.Load):
            items = [self.eval(e) for e in node.elts]
            return self.check_value(items if isinstance(node, ast.List) else tuple(items))
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in WHITELIST:
                what = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
                raise UnsafeExpression(f"call of {what!r} is not allowed (whitelist: {sorted(WHITELIST)})")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise UnsafeExpression("keyword and starred arguments are not allowed")
            if len(node.args) > self.limits.max_args:
                raise UnsafeExpression(f"more than {self.limits.max_args} arguments")
            args = [self.eval(a) for a in node.args]
            try:
                return self.check_value(WHITELIST[node.func.id](*args))
            except (ArithmeticError, TypeError, ValueError) as exc:
                raise EvalError(f"{type(exc).__name__}: {exc}") from None
        if isinstance(node, ast.Name):
            raise UnsafeExpression(f"name {node.id!r} is not allowed")
        raise UnsafeExpression(f"{type(node).__name__} is not allowed")


def safe_eval(source: str, limits: Limits = DEFAULT_LIMITS) -> object:
    """Value of the expression ``source`` under the grammar and limits of the module docstring.

    Raises UnsafeExpression (rejected) or EvalError (allowed but failing).
    """
    if not isinstance(source, str):
        raise UnsafeExpression("source must be a string")
    if len(source) > limits.max_chars:
        raise UnsafeExpression(f"source longer than {limits.max_chars} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise UnsafeExpression(f"not a Python expression ({type(exc).__name__})") from None
    if _depth(tree) > limits.max_depth:
        raise UnsafeExpression(f"nesting deeper than {limits.max_depth}")
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > limits.max_nodes:
        raise UnsafeExpression(f"{nodes} AST nodes, more than {limits.max_nodes}")
    return _Interpreter(limits).eval(tree)
