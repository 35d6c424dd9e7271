"""params.yaml comments and the package's docstrings and comments say what a setting means and
why the code is as it is; what a run measured lives in bench/RESULTS.md alone. This fails when a
measured figure or a citation of a diary entry creeps back in."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "params.yaml"
SOURCE_FOLDERS = ("transformer_pl", "pipelines")

# A confidence level names an interval ("its 95% paired-bootstrap interval"): a method, not a
# measurement.
PERCENTAGE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%(?!\s+(?:[\w-]+\s+)?interval)")
LAB_NOTEBOOK: dict[str, re.Pattern[str]] = {
    "a percentage figure": PERCENTAGE,
    "a diary entry's number": re.compile(r"\bsession\s+\d+", re.IGNORECASE),
    "a citation of a diary entry": re.compile(
        r"RESULTS(?:\.md)?\s*[,:;(]\s*(?:session|commit|table|run|\d)", re.IGNORECASE
    ),
    "a speed-up figure": re.compile(
        r"(?<![\w.])\d+(?:\.\d+)?\s?[x×]\s+(?:faster|slower|as\s+(?:long|fast)|the\s+\w*\s*time)",
        re.IGNORECASE,
    ),
}


def figures(text: str) -> list[str]:
    """What in `text` reads as a lab notebook: '<kind>: <the words>' per finding."""
    flat = " ".join(text.split())  # a figure and its unit may sit on two lines
    return [
        f"{kind}: {match.group(0)!r}"
        for kind, pattern in LAB_NOTEBOOK.items()
        for match in pattern.finditer(flat)
    ]


@pytest.mark.parametrize(
    "text",
    [
        "IMDB test: 89.97% against 89.17% without a teacher",
        "512 tokens hold 87% of reviews whole",
        "measured in session 23",
        "(bench/RESULTS.md, session 12)",
        "see bench/RESULTS.md: 88.37",
        "finetune takes ~2.2x as long",
        "for 1.2x the finetune time",
        "it trains ~2x faster",
    ],
)
def test_the_patterns_catch_figures(text: str) -> None:
    assert figures(text), text


@pytest.mark.parametrize(
    "text",
    [
        "the paired difference with its 95% paired-bootstrap interval",
        "and its 95%\n    interval, from two versions' val predictions",
        "why this rather than masked-LM pretraining: see bench/RESULTS.md",
        "(B, T, d_model) -> (B, 2D) for mean_max",
        "becomes [MASK] with probability 0.8",
        'time.strftime("%Y%m%dT%H%M%S")',
        "one session of the pipeline",
    ],
)
def test_the_patterns_leave_plain_text_alone(text: str) -> None:
    assert not figures(text)


def yaml_comments(text: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of each run of consecutive comment lines of a YAML file."""
    yield from _runs(
        (number, match.group(1))
        for number, line in enumerate(text.splitlines(), start=1)
        if (match := re.search(r"(?:^|\s)#(.*)$", line))
    )


def python_prose(source: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of each docstring and each run of consecutive comment lines."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                yield node.body[0].lineno, docstring
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    yield from _runs(
        (token.start[0], token.string.removeprefix("#"))
        for token in tokens
        if token.type == tokenize.COMMENT
    )


def _runs(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Consecutive numbered lines joined into one text, numbered by its first line."""
    first, last, texts = 0, -1, []
    for number, text in lines:
        if number != last + 1 and texts:
            yield first, " ".join(texts)
            texts = []
        if not texts:
            first = number
        texts.append(text)
        last = number
    if texts:
        yield first, " ".join(texts)


def test_params_yaml_comments_hold_no_figures() -> None:
    found = [
        f"params.yaml:{line}: {finding}"
        for line, text in yaml_comments(PARAMS_FILE.read_text(encoding="utf-8"))
        for finding in figures(text)
    ]
    assert not found, "figures belong in bench/RESULTS.md:\n" + "\n".join(found)


def test_docstrings_and_comments_hold_no_figures() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {finding}"
        for folder in SOURCE_FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, text in python_prose(path.read_text(encoding="utf-8"))
        for finding in figures(text)
    ]
    assert not found, "figures belong in bench/RESULTS.md:\n" + "\n".join(found)
