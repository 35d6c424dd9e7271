"""What clean and validate check in a QA dataset's rows: a question, and answers that are spans
of the context they come with.

`answers` is JSON as the Hub's SQuAD holds it: {"text": [...], "answer_start": [...]}, one entry
per reference answer (dev sets have several).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from transformer_pl.dataset_spec import RowChecks


def parse_answers(value: str) -> tuple[list[str], list[int]]:
    """(answer texts, their character starts) from an `answers` JSON value; ValueError naming
    what is wrong."""
    try:
        answers = json.loads(value)
        texts, starts = list(answers["text"]), [int(start) for start in answers["answer_start"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"answers not {{'text': [...], 'answer_start': [...]}} ({error})"
        ) from None
    if len(texts) != len(starts):
        raise ValueError(f"{len(texts)} answer texts but {len(starts)} answer starts")
    if not texts:
        raise ValueError("no answer")
    return [str(text) for text in texts], starts


def answer_problem(context: str, texts: list[str], starts: list[int]) -> str | None:
    """The first answer that is not the span of `context` it says it is, described; or None."""
    for number, (text, start) in enumerate(zip(texts, starts, strict=True), start=1):
        found = context[start : start + len(text)] if start >= 0 else ""
        if not text.strip() or found != text:
            return f"answer {number} {text[:60]!r} at {start}: the context has {found[:60]!r}"
    return None


def check_question_rows(text: pd.Series, frame: pd.DataFrame) -> RowChecks:
    """The rows' questions (whitespace collapsed) and answers, id and title as read; rows to
    drop: `empty` (no question), `bad_answers` (unreadable or none), `answer_mismatch` (an
    answer that is not its span of the context), `duplicate` (an id an earlier row has)."""
    question = frame["question"].fillna("").map(lambda value: " ".join(value.split()))
    question = question.astype("string")
    details = pd.Series("", index=text.index, dtype="string")
    bad = pd.Series(False, index=text.index)
    mismatch = pd.Series(False, index=text.index)
    for index, context, answers in zip(text.index, text, frame["answers"], strict=True):
        if pd.isna(answers):
            bad[index], details[index] = True, "no answers"
            continue
        try:
            texts, starts = parse_answers(answers)
        except ValueError as error:
            bad[index], details[index] = True, str(error)
            continue
        problem = answer_problem(str(context), texts, starts)
        if problem is not None:
            mismatch[index], details[index] = True, problem
    # Among the rows nothing else drops: a quarantined row's id does not take a later one's.
    usable = frame["parse_error"].isna() & (text.fillna("") != "") & (question != "") & ~bad
    usable &= ~mismatch
    ids = frame["id"].where(usable)
    repeated_id = ids.notna() & ids.duplicated(keep="first")
    first_row = frame.groupby(ids, sort=False, dropna=False)["row"].transform("first")
    same_id = "same id as row " + first_row.astype("Int64").astype("string")
    return RowChecks(
        columns={
            "question": question,
            "answers": frame["answers"],
            "id": frame["id"],
            "title": frame["title"],
        },
        problems=[
            (question == "", "empty", "question: blank"),
            (bad, "bad_answers", details),
            (mismatch, "answer_mismatch", details),
            (repeated_id, "duplicate", same_id),
        ],
    )


def question_validation_values(frame: pd.DataFrame) -> dict[str, Any]:
    """Whether every answer is its span of the context, and how many answers each row has."""
    inside, counts = [], []
    for context, answers in zip(frame["text"], frame["answers"], strict=True):
        try:
            texts, starts = parse_answers(answers)
        except (ValueError, TypeError):
            inside.append(False)
            counts.append(0)
            continue
        inside.append(answer_problem(context, texts, starts) is None)
        counts.append(len(texts))
    return {"answers_in_context": inside, "answer_count": counts}


def question_expectations() -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="question"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="question", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="answers_in_context", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="answer_count", min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
    ]
