"""A bundled code task in APPS format: small Python problems with unit tests, from templates (fixed seed).

Each template (`TEMPLATES`) is a family of problems at one APPS difficulty, with a random parameter
(a constant, a letter) and a random function name:
  introductory  one-liners: x + k, max(xs) * k, sum of xs above k, s * k, divisibility, a op b (stdin)
  interview     small loops: count a letter, sum of multiples, factorial mod m, Fibonacci mod m,
                count above k, reverse the words of a line (stdin)
  competition   slightly longer: longest run of equal values, pairs summing to k, best block sum,
                primes up to n, digital root in base b, balanced brackets (stdin)
A template holds the statement, a reference solution (the program text written into `solutions`),
an independent oracle that computes the expected outputs, and a test-input generator. Call-based
problems (the APPS "fn_name" form) have top-level functions and `starter_code` "def f(args):";
their expected outputs are wrapped in a one-element list, as in APPS. Standard-input problems
compare printed lines. The statement ends with one worked example from the first test.

`generate(out_dir, seed, n_train, n_test)` writes `train.jsonl` and `test.jsonl`, read by
`rlhf_jax.rewards.load_apps(out_dir, split)`; no problem repeats within or across the splits (a
test problem is never a training problem with other tests). The reference solutions pass their tests in the real sandbox
(`rlhf_jax.rewards.evaluate_program`); see tests/miniature/test_code_task.py.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import random
from collections.abc import Callable
from typing import Any

DIFFICULTIES = ("introductory", "interview", "competition")
TESTS_PER_PROBLEM = 5


@dataclasses.dataclass(frozen=True)
class Template:
    """A problem family. `question` and `solution` are format strings over {fn} and {p} (the
    parameter); `oracle(p, *args)` gives the expected value (stdin problems: the printed text);
    `inputs(rng, p)` draws one test's arguments (stdin problems: the input text); `params(rng)`
    draws the parameter. Call-based when `args` (the argument names) is set."""

    name: str
    difficulty: str
    question: str
    solution: str
    oracle: Callable[..., Any]
    inputs: Callable[[random.Random, Any], Any]
    params: Callable[[random.Random], Any]
    args: str = ""  # "x" or "xs, k": call-based with these arguments; "" = standard input
    names: tuple[str, ...] = ("solve",)


def _ints(rng: random.Random, lo: int = -9, hi: int = 9, min_len: int = 1, max_len: int = 7) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(min_len, max_len))]


def _words(rng: random.Random) -> str:
    vocab = ("cat", "dog", "sun", "map", "red", "big", "run", "top", "box", "egg")
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 5)))


def _brackets(rng: random.Random) -> str:
    if rng.random() < 0.5:  # balanced by construction
        depth, out = 0, []
        for _ in range(rng.randint(1, 6)):
            if depth and rng.random() < 0.5:
                out.append(")")
                depth -= 1
            else:
                out.append("(")
                depth += 1
        return "".join(out) + ")" * depth
    return "".join(rng.choice("()") for _ in range(rng.randint(1, 8)))


def _longest_run(xs):
    best, run = 0, 0
    for i, x in enumerate(xs):
        run = run + 1 if i and xs[i - 1] == x else 1
        best = max(best, run)
    return best


def _best_block(xs):
    return max(sum(xs[i:j]) for i in range(len(xs)) for j in range(i + 1, len(xs) + 1))


def _digital_root(b, n):
    while n >= b:
        n = sum(int(d, b) for d in _in_base(n, b))
    return n


def _in_base(n, b):
    digits = "0123456789abcdef"
    out = ""
    while True:
        out = digits[n % b] + out
        n //= b
        if not n:
            return out


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text.strip():
        depth += 1 if ch == "(" else -1
        if depth < 0:
            return False
    return depth == 0


def _fib(m, n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, (a + b) % m
    return a % m


def _factorial(m, n):
    out = 1
    for i in range(2, n + 1):
        out = out * i % m
    return out % m


_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _k(lo, hi):
    return lambda rng: rng.randint(lo, hi)


TEMPLATES: tuple[Template, ...] = (
    # introductory
    Template("add_const", "introductory", "Write a function {fn}(x) that returns x plus {p}.",
             "def {fn}(x):\n    return x + {p}\n", lambda p, x: x + p,
             lambda rng, p: [rng.randint(-50, 50)], _k(1, 99), "x", ("add", "plus", "shift")),
    Template("scaled_max", "introductory",
             "Write a function {fn}(xs) that returns the largest number in the list xs times {p}.",
             "def {fn}(xs):\n    return max(xs) * {p}\n", lambda p, xs: max(xs) * p,
             lambda rng, p: [_ints(rng)], _k(1, 20), "xs", ("scaled_max", "big", "top")),
    Template("sum_above", "introductory",
             "Write a function {fn}(xs) that returns the sum of the numbers in xs that are greater than {p}.",
             "def {fn}(xs):\n    return sum(x for x in xs if x > {p})\n", lambda p, xs: sum(x for x in xs if x > p),
             lambda rng, p: [_ints(rng, min_len=0)], _k(-5, 5), "xs", ("sum_above", "total", "add_big")),
    Template("repeat", "introductory", "Write a function {fn}(s) that returns the string s repeated {p} times.",
             "def {fn}(s):\n    return s * {p}\n", lambda p, s: s * p,
             lambda rng, p: [rng.choice(("a", "ab", "xyz", "hi", ""))], _k(0, 9), "s", ("repeat", "copy", "echo")),
    Template("divisible", "introductory",
             "Write a function {fn}(n) that returns True if n is divisible by {p}, otherwise False.",
             "def {fn}(n):\n    return n % {p} == 0\n", lambda p, n: n % p == 0,
             lambda rng, p: [rng.choice((rng.randint(-99, 99), p * rng.randint(-9, 9)))], _k(2, 30), "n",
             ("divisible", "check", "is_multiple")),
    Template("arith_stdin", "introductory",
             "Read two integers a and b from one line and print a {p[0]} b + {p[1]}.",
             "a, b = map(int, input().split())\nprint(a {p[0]} b + {p[1]})\n",
             lambda p, text: f"{_ARITH[p[0]](*map(int, text.split())) + p[1]}\n",
             lambda rng, p: f"{rng.randint(-99, 99)} {rng.randint(-99, 99)}\n",
             lambda rng: (rng.choice("+-*"), rng.randint(0, 19))),
    # interview
    Template("count_letter", "interview",
             "Write a function {fn}(s) that returns how many times the letter '{p}' appears in s.",
             "def {fn}(s):\n    count = 0\n    for ch in s:\n        if ch == '{p}':\n            count += 1\n"
             "    return count\n", lambda p, s: s.count(p),
             lambda rng, p: ["".join(rng.choice("abcde") for _ in range(rng.randint(0, 12)))],
             lambda rng: rng.choice("abcde"), "s", ("count", "letters", "how_many")),
    Template("sum_multiples", "interview",
             "Write a function {fn}(n) that returns the sum of the numbers from 1 to n that are divisible by {p}.",
             "def {fn}(n):\n    total = 0\n    for i in range(1, n + 1):\n        if i % {p} == 0:\n"
             "            total += i\n    return total\n", lambda p, n: sum(i for i in range(1, n + 1) if i % p == 0),
             lambda rng, p: [rng.randint(0, 100)], _k(2, 12), "n", ("sum_multiples", "total", "add_up")),
    Template("factorial_mod", "interview",
             "Write a function {fn}(n) that returns n factorial (1 * 2 * ... * n, and 1 for n = 0) modulo {p}.",
             "def {fn}(n):\n    out = 1\n    for i in range(2, n + 1):\n        out = out * i % {p}\n"
             "    return out % {p}\n", _factorial, lambda rng, p: [rng.randint(0, 30)], _k(7, 1000), "n",
             ("factorial", "fact", "product")),
    Template("fib_mod", "interview",
             "Write a function {fn}(n) that returns the n-th Fibonacci number modulo {p}, where the 0-th is 0 "
             "and the 1-st is 1.",
             "def {fn}(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, (a + b) % {p}\n"
             "    return a % {p}\n", _fib, lambda rng, p: [rng.randint(0, 60)], _k(2, 1000), "n",
             ("fib", "fibonacci", "rabbits")),
    Template("count_above", "interview",
             "Write a function {fn}(xs) that returns how many numbers in xs are at least {p}.",
             "def {fn}(xs):\n    count = 0\n    for x in xs:\n        if x >= {p}:\n            count += 1\n"
             "    return count\n", lambda p, xs: sum(1 for x in xs if x >= p),
             lambda rng, p: [_ints(rng, min_len=0, max_len=9)], _k(-5, 5), "xs", ("count_above", "at_least", "tall")),
    Template("reverse_words", "interview",
             "Read a line of words and print them in reverse order, separated by '{p}'.",
             "words = input().split()\nprint('{p}'.join(reversed(words)))\n",
             lambda p, text: p.join(reversed(text.split())) + "\n",
             lambda rng, p: _words(rng) + "\n", lambda rng: rng.choice((" ", ",", "-", "+", ";", ":", "/", "|"))),
    # competition
    Template("longest_run", "competition",
             "Write a function {fn}(xs) that returns the length of the longest block of equal adjacent numbers "
             "in xs, or 0 if xs is empty; numbers are taken modulo {p} before comparing.",
             "def {fn}(xs):\n    best, run = 0, 0\n    for i in range(len(xs)):\n"
             "        if i > 0 and xs[i - 1] % {p} == xs[i] % {p}:\n            run += 1\n        else:\n"
             "            run = 1\n        best = max(best, run)\n    return best\n",
             lambda p, xs: _longest_run([x % p for x in xs]),
             lambda rng, p: [_ints(rng, 0, 4, 0, 10)], _k(2, 12), "xs", ("longest_run", "streak", "block")),
    Template("pair_sums", "competition",
             "Write a function {fn}(xs) that returns how many pairs of positions i < j have xs[i] + xs[j] == {p}.",
             "def {fn}(xs):\n    count = 0\n    for i in range(len(xs)):\n        for j in range(i + 1, len(xs)):\n"
             "            if xs[i] + xs[j] == {p}:\n                count += 1\n    return count\n",
             lambda p, xs: sum(1 for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[i] + xs[j] == p),
             lambda rng, p: [_ints(rng, -3, 6, 0, 9)], _k(-5, 12), "xs", ("pair_sums", "pairs", "two_sum_count")),
    Template("best_block", "competition",
             "Write a function {fn}(xs) that returns the largest sum of a non-empty block of adjacent numbers "
             "in xs, plus {p}.",
             "def {fn}(xs):\n    best = xs[0]\n    current = 0\n    for x in xs:\n        current = max(x, current + x)\n"
             "        best = max(best, current)\n    return best + {p}\n",
             lambda p, xs: _best_block(xs) + p, lambda rng, p: [_ints(rng)], _k(1, 50), "xs",
             ("best_block", "max_sum", "window")),
    Template("count_primes", "competition",
             "Write a function {fn}(n) that returns how many prime numbers p with {p} <= p <= n exist.",
             "def {fn}(n):\n    count = 0\n    for k in range(max(2, {p}), n + 1):\n"
             "        if all(k % d for d in range(2, int(k ** 0.5) + 1)):\n            count += 1\n    return count\n",
             lambda p, n: sum(1 for k in range(max(2, p), n + 1) if all(k % d for d in range(2, k))),
             lambda rng, p: [rng.randint(0, 120)], _k(0, 30), "n", ("count_primes", "primes", "sieve")),
    Template("digital_root", "competition",
             "Write a function {fn}(n) that writes n >= 0 in base {p}, replaces n by the sum of those digits, "
             "and repeats until n is less than {p}; return that n.",
             "def {fn}(n):\n    while n >= {p}:\n        total = 0\n        while n > 0:\n            total += n % {p}\n"
             "            n //= {p}\n        n = total\n    return n\n", _digital_root,
             lambda rng, p: [rng.randint(0, 10 ** rng.randint(1, 6))], _k(2, 16), "n", ("digital_root", "shrink", "fold")),
    Template("balanced", "competition",
             "Read a line of '(' and ')' characters and print {p[0]} if every bracket is closed in order, "
             "otherwise print {p[1]}.",
             "s = input().strip()\ndepth = 0\nok = True\nfor ch in s:\n    depth += 1 if ch == '(' else -1\n"
             "    if depth < 0:\n        ok = False\nprint('{p[0]}' if ok and depth == 0 else '{p[1]}')\n",
             lambda p, text: f"{p[0] if _balanced(text) else p[1]}\n", lambda rng, p: _brackets(rng) + "\n",
             lambda rng: (rng.choice(("YES", "OK", "GOOD", "TRUE", "FINE", "RIGHT")), rng.choice(("NO", "BAD", "WRONG")))),
)


def _check_templates() -> None:
    names = [t.name for t in TEMPLATES]
    assert len(set(names)) == len(names) and {t.difficulty for t in TEMPLATES} == set(DIFFICULTIES), names


_check_templates()


def make_problem(template: Template, rng: random.Random, problem_id: int) -> tuple[dict, tuple]:
    """One APPS row from `template` with a random parameter, function name and tests, and the
    problem's identity (template, parameter, function name): two rows with the same identity are
    the same problem (only their tests differ)."""
    p, fn = template.params(rng), rng.choice(template.names)
    inputs = [template.inputs(rng, p) for _ in range(TESTS_PER_PROBLEM)]
    spec: dict[str, Any] = {"inputs": inputs}
    question = template.question.format(fn=fn, p=p)
    if template.args:
        spec["outputs"] = [[template.oracle(p, *args)] for args in inputs]
        spec["fn_name"] = fn
        example = f"{fn}({', '.join(repr(a) for a in inputs[0])}) returns {spec['outputs'][0][0]!r}"
        starter = f"def {fn}({template.args}):\n"
    else:
        spec["outputs"] = [template.oracle(p, text) for text in inputs]
        example = f"the input {inputs[0].strip()!r} gives the output {spec['outputs'][0].strip()!r}"
        starter = ""
    return {"problem_id": problem_id, "question": f"{question} For example, {example}.",
            "solutions": json.dumps([template.solution.format(fn=fn, p=p)]), "input_output": json.dumps(spec),
            "difficulty": template.difficulty, "url": f"miniature://code_task/{template.name}",
            "starter_code": starter}, (template.name, repr(p), fn)


def generate(out_dir: str | os.PathLike, seed: int = 0, n_train: int = 600, n_test: int = 150) -> dict:
    """Writes `train.jsonl` and `test.jsonl` to `out_dir`; returns their paths and per-difficulty counts.

    Difficulties are drawn uniformly, then a template of that difficulty; problem ids run from 0
    (train) and from 100000 (test). No problem repeats, within or across the splits (by identity,
    see `make_problem`); ValueError if the templates cannot give that many. The same arguments always produce identical files.
    """
    for name, value in (("seed", seed), ("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'seed' else 1}, got {value!r}")
    by_difficulty = {d: [t for t in TEMPLATES if t.difficulty == d] for d in DIFFICULTIES}
    rng = random.Random(f"{seed}:code")
    seen: set[tuple] = set()
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    result: dict[str, Any] = {"paths": {}, "counts": {}}
    for split, n, first_id in (("train", n_train, 0), ("test", n_test, 100_000)):
        rows = []
        for k in range(n):
            difficulty = rng.choice(DIFFICULTIES)
            for _ in range(1000):
                template = rng.choice(by_difficulty[difficulty])
                row, identity = make_problem(template, rng, first_id + k)
                if identity not in seen:
                    break
            else:
                raise ValueError(f"n_train + n_test = {n_train + n_test} is more distinct {difficulty} problems "
                                 "than the templates give; ask for fewer")
            seen.add(identity)
            rows.append(row)
        path = os.path.join(out_dir, f"{split}.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        result["paths"][split] = path
        result["counts"][split] = {d: sum(r["difficulty"] == d for r in rows) for d in DIFFICULTIES}
    return result


def paths(out_dir: str | os.PathLike) -> dict[str, str]:
    """The files `generate(out_dir, ...)` writes (the "paths" of its result), checked to exist."""
    d = os.fspath(out_dir)
    found = {"train": os.path.join(d, "train.jsonl"), "test": os.path.join(d, "test.jsonl")}
    missing = [p for p in found.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{d}: missing {missing}; run generate({d!r}, ...) first")
    return found
