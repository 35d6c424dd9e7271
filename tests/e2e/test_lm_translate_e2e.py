"""Language modelling, translation and summarization as a user runs them: `tpl run --profile
tiny-lm`, `tiny-translate` and `tiny-summarize` through Prefect, each in a fresh workspace (see
conftest.py).

tiny-lm runs as it is, on Tiny Shakespeare: test perplexity far below the uniform bound (the
vocabulary size) and below unigram frequencies. tiny-translate is the overfit check: its model and
budget on a few hundred Multi30k pairs that are its train, val and test split at once, so BLEU
must rise far above zero (a model that cannot learn a mapping scores near it) and above copying
the source. tiny-summarize is the same check on a few hundred SAMSum dialogues: its ROUGE must
rise above the Lead-3 and Longest-3 extracts of the same dialogues. Each run writes samples of
its outputs as artifacts, registers its task's pyfunc model as champion under its own name,
serves it (the registered model continues prompts, translates or summarizes, per-request
decoding params included; `tpl predict` prints them), and leaves DVC clean.
One run per profile is shared by the module's tests (minutes each on a 2-core CPU).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from transformer_pl.params import load_params

pytestmark = pytest.mark.slow

MakeE2eWorkspace = Callable[..., Any]  # conftest.py: e2e_workspace(name, ...)
UpdateParams = Callable[..., dict[str, Any]]  # conftest.py
ProfileRun = Any  # conftest.PipelineRun
# The overfit check: the first pairs of Multi30k's train split as train, val and test; held-out
# pairs are not dropped as leakage, and the profile's model trains for more epochs on them.
OVERFIT_PAIRS = 256
OVERFIT = {"clean": {"drop_leakage": False}, "finetune": {"max_epochs": 40}}
# A summary is linked to its dialogue later than a translation to its sentence: fewer, shorter
# dialogues and more steps (about 600) than the translation check.
SUMMARIZE_OVERFIT = {
    "clean": {"drop_leakage": False},
    "encode": {"max_length": 128},
    "finetune": {"max_epochs": 150, "batch_size": 16},
}
MIN_OVERFIT_ROUGE = {"rouge1": 90.0, "rougeL": 90.0}  # measured 98.6 and 98.6 (Lead-3 29.9)
MIN_TEST_BLEU = 20.0  # measured 66.7 (greedy 46.0); a model ignoring its source scores near 1
PROFILES = {
    # profile: (the run's fixture, the registered model, its pyfunc's output column)
    "tiny-lm": ("lm_run", "transformer-pl-tinyshakespeare", "continuation"),
    "tiny-translate": ("translate_run", "transformer-pl-multi30k-de-en", "translation"),
    "tiny-summarize": ("summarize_run", "transformer-pl-samsum", "summary"),
}
OVERFIT_DIALOGUES = 64
SAMSUM_SPLITS = ("train", "validation", "test")
DIALOGUE = "Anna: Are we still on for lunch?\nBen: Yes, 12:30 at the usual place.\nAnna: Great!"


@pytest.fixture(scope="module")
def lm_run(e2e_workspace: MakeE2eWorkspace) -> ProfileRun:
    return e2e_workspace("tiny-lm").run_pipeline("tiny-lm")


def _write_overfit_pairs(multi30k: Path, folder: Path) -> Path:
    """Multi30k's first training pairs under the file names of all three splits."""
    folder.mkdir()
    for language in ("de", "en"):
        with gzip.open(multi30k / f"train.{language}.gz", "rt", encoding="utf-8") as handle:
            pairs = [next(handle) for _ in range(OVERFIT_PAIRS)]
        for split in ("train", "val", "test_2016_flickr"):
            with gzip.open(folder / f"{split}.{language}.gz", "wt", encoding="utf-8") as handle:
                handle.writelines(pairs)
    return folder


@pytest.fixture(scope="module")
def translate_run(
    e2e_workspace: MakeE2eWorkspace,
    update_params: UpdateParams,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ProfileRun:
    pairs = _write_overfit_pairs(shared_data / "multi30k", tmp_path_factory.mktemp("pairs") / "p")
    workspace = e2e_workspace("tiny-translate")
    update_params(
        workspace.root,
        {"datasets": {"multi30k": {"path": str(pairs)}}, "profiles": {"tiny-translate": OVERFIT}},
    )
    workspace.git("commit", "--quiet", "--all", "-m", "overfit check")
    return workspace.run_pipeline("tiny-translate")


def _write_overfit_dialogues(samsum: Path, folder: Path) -> Path:
    """SAMSum's first non-empty training dialogues under the file names of all three splits."""
    folder.mkdir()
    with gzip.open(samsum / "train.jsonl.gz", "rt", encoding="utf-8") as handle:
        records = [line for line in handle if json.loads(line)["dialogue"].strip()]
    for split in SAMSUM_SPLITS:
        with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(records[:OVERFIT_DIALOGUES])
    return folder


@pytest.fixture(scope="module")
def summarize_run(
    e2e_workspace: MakeE2eWorkspace,
    update_params: UpdateParams,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ProfileRun:
    folder = tmp_path_factory.mktemp("dialogues") / "d"
    dialogues = _write_overfit_dialogues(shared_data / "samsum", folder)
    workspace = e2e_workspace("tiny-summarize")
    update_params(
        workspace.root,
        {
            "datasets": {"samsum": {"path": str(dialogues)}},
            "profiles": {"tiny-summarize": SUMMARIZE_OVERFIT},
        },
    )
    workspace.git("commit", "--quiet", "--all", "-m", "overfit check")
    return workspace.run_pipeline("tiny-summarize")


@pytest.fixture(params=list(PROFILES))
def profile_run(request: pytest.FixtureRequest) -> ProfileRun:
    return request.getfixturevalue(PROFILES[request.param][0])


# --- language modelling -----------------------------------------------------------------------


def test_tiny_lm_perplexity_is_far_below_the_uniform_bound(lm_run: ProfileRun) -> None:
    metrics = lm_run.json("metrics/evaluate.json")
    print({key: value for key, value in metrics.items() if "perplexity" in key})
    vocab_size = lm_run.json("data/reports/tokenizer.json")["vocab_size"]
    assert metrics["uniform_perplexity"] == vocab_size
    assert metrics["test_perplexity"] < vocab_size / 4, metrics
    # Context helps: better than each token's training frequency alone.
    assert metrics["test_perplexity"] < metrics["baseline_test_perplexity"], metrics
    # Per word: the same summed NLL over fewer units (words and line ends, not subwords).
    assert metrics["test_words"] < metrics["test_tokens"]
    assert metrics["test_word_perplexity"] > metrics["test_perplexity"]
    assert re.search(
        r"(?m)^test_perplexity: \S+ \(baseline \S+\); − baseline \S+ \[\S+, \S+\]", lm_run.stdout
    )


def test_tiny_lm_writes_greedy_and_sampled_samples_as_artifacts(lm_run: ProfileRun) -> None:
    samples = lm_run.json("metrics/samples.json")
    prompts = load_params(lm_run.workspace.root / "params.yaml", "tiny-lm").tasks.lm.prompts
    assert [sample["prompt"] for sample in samples["samples"]] == prompts
    assert all(sample["greedy"].strip() for sample in samples["samples"]), samples
    with lm_run.tracking() as client:
        parent = client.get_run(lm_run.mlflow_run_id)
        (evaluate_run,) = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
            "and tags.stage = 'evaluate'",
        )
        logged = {item.path for item in client.list_artifacts(evaluate_run.info.run_id, "metrics")}
    assert {"metrics/evaluate.json", "metrics/samples.json"} <= logged


# --- translation ------------------------------------------------------------------------------


def test_tiny_translate_bleu_is_above_a_small_bound_and_the_source(
    translate_run: ProfileRun,
) -> None:
    metrics = translate_run.json("metrics/evaluate.json")
    print({key: value for key, value in metrics.items() if "bleu" in key or "chrf" in key})
    assert metrics["test_examples"] == OVERFIT_PAIRS
    assert metrics["test_bleu"] > MIN_TEST_BLEU, metrics
    assert metrics["test_bleu"] > metrics["baseline_test_bleu"], metrics  # German left as is
    assert metrics["test_chrf"] > metrics["baseline_test_chrf"], metrics
    assert re.fullmatch(
        r"nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:2\.6\.0",
        metrics["bleu_signature"],
    )
    assert re.search(
        r"(?m)^test_bleu: \S+ \(baseline \S+\); − baseline \S+ \[\S+, \S+\]", translate_run.stdout
    )
    samples = translate_run.json("metrics/samples.json")["samples"]
    assert samples and all(sample["translation"] for sample in samples)


# --- summarization ----------------------------------------------------------------------------


def test_tiny_summarize_rouge_is_above_lead_3_and_longest_3(summarize_run: ProfileRun) -> None:
    metrics = summarize_run.json("metrics/evaluate.json")
    print({key: value for key, value in metrics.items() if "rouge" in key})
    assert metrics["test_examples"] == OVERFIT_DIALOGUES
    for rouge in ("rouge1", "rougeL"):
        assert metrics[f"test_{rouge}"] > MIN_OVERFIT_ROUGE[rouge], metrics
        assert metrics[f"test_{rouge}_minus_lead3_ci95_low"] > 0, metrics
        assert metrics[f"test_{rouge}_minus_baseline_ci95_low"] > 0, metrics  # Longest-3
    samples = summarize_run.json("metrics/samples.json")["samples"]
    assert samples and all(sample["summary"].strip() for sample in samples)


# --- all --------------------------------------------------------------------------------------


def test_registers_its_task_model_as_champion_and_serves_it(profile_run: ProfileRun) -> None:
    _, model_name, column = PROFILES[profile_run.profile]
    params = load_params(profile_run.workspace.root / "params.yaml", profile_run.profile)
    assert params.model_name == model_name
    metric, _ = params.registration_metric
    metrics = profile_run.json("metrics/evaluate.json")
    with profile_run.tracking() as client:
        (version,) = client.search_model_versions(f"name = '{model_name}'")
        assert client.get_model_version_by_alias(model_name, "champion").version == version.version
        assert float(version.tags[f"metric.{metric}"]) == metrics[metric]
        if profile_run.profile == "tiny-translate":
            assert version.tags["evaluation.bleu_signature"] == metrics["bleu_signature"]

        served = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
        texts = {
            "tiny-lm": ["ROMEO:", "KING RICHARD III:"],
            "tiny-translate": ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."],
            "tiny-summarize": [DIALOGUE, "Tom: I'm late.\r\nKate: Again?"],
        }[profile_run.profile]
        frame = pd.DataFrame({"text": texts})
        answers = served.predict(frame)
        assert list(answers.columns) == [column] and len(answers) == len(texts)
        assert all(isinstance(answer, str) and answer.strip() for answer in answers[column])
        # Per-request decoding: a seeded sample repeats; one beam is greedy decoding.
        overrides = (
            {"do_sample": True, "seed": 3, "temperature": 0.8, "top_k": 20}
            if profile_run.profile == "tiny-lm"
            else {"beam_size": 1}
        )
        once = served.predict(frame, params=overrides)[column].tolist()
        assert served.predict(frame, params=overrides)[column].tolist() == once

    printed = profile_run.workspace.tpl("predict", texts[0], "--model", model_name)
    assert printed.returncode == 0, printed.stderr
    answer = answers[column].iloc[0].replace("\n", "\\n")
    assert printed.stdout.rstrip("\n") == f"{answer}\t{texts[0]}"


def test_dvc_status_is_clean_after_the_run(profile_run: ProfileRun) -> None:
    params = (profile_run.workspace.root / "params.yaml").read_text()
    assert f"profile: {profile_run.profile}" in params
    status = profile_run.workspace.dvc("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {}
    assert Path(profile_run.workspace.root / "plots").is_dir()  # evaluate's (empty) plots
