"""Named-entity recognition and question answering as a user runs them: `tpl run --profile
tiny-ner` and `tpl run --profile tiny-qa` through Prefect, each in a fresh workspace (see
conftest.py).

tiny-ner runs as it is, on all of CoNLL-2003's train split: its test entity F1 above the
shared-task baseline fitted in the same run. tiny-qa is the overfit check, as tiny-translate's:
its reader and budget on the first questions of TyDi QA English's train file as train, val and
test at once, so its F1 must rise far above the sliding-window baseline (a reader that cannot
learn to point at spans stays near it). Each run registers its task's pyfunc model as champion,
serves it (entities with character offsets; answers as spans of the context), `tpl predict`
prints them, and DVC is clean afterwards. One run per profile is shared by the module's tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from transformer_pl.params import load_params

pytestmark = pytest.mark.slow

ProfileRun = Any  # conftest.PipelineRun
OVERFIT_QUESTIONS = 200
OVERFIT = {"clean": {"drop_leakage": False}, "finetune": {"max_epochs": 40}}
MIN_TEST_NER_F1 = 60.0  # measured 63.5 (baseline 59.5)
MIN_OVERFIT_QA_F1 = 90.0  # measured 97.2 (sliding window 12.8)
PROFILES = {
    # profile: (the run's fixture, the registered model)
    "tiny-ner": ("ner_run", "transformer-pl-conll2003"),
    "tiny-qa": ("qa_run", "transformer-pl-squad"),
}
SENTENCE = "EU rejects German call to boycott British lamb in Brussels ."


@pytest.fixture(scope="module")
def ner_run(e2e_workspace: Any) -> ProfileRun:
    return e2e_workspace("tiny-ner").run_pipeline("tiny-ner")


def _write_overfit_questions(tydiqa: Path, folder: Path) -> Path:
    """TyDi QA English's first training questions, as SQuAD JSON, under one file name."""
    folder.mkdir()
    articles = json.loads((tydiqa / "english_tydiqa_train.json").read_text())["data"]
    (folder / "questions.json").write_text(json.dumps({"data": articles[:OVERFIT_QUESTIONS]}))
    return folder


@pytest.fixture(scope="module")
def qa_run(
    e2e_workspace: Any,
    update_params: Any,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ProfileRun:
    folder = _write_overfit_questions(
        shared_data / "tydiqa_goldp_en", tmp_path_factory.mktemp("questions") / "q"
    )
    workspace = e2e_workspace("tiny-qa")
    splits = {split: "questions.json" for split in ("train", "val", "test")}
    update_params(
        workspace.root,
        {
            "datasets": {"squad": {"path": str(folder), "splits": splits}},
            "profiles": {"tiny-qa": OVERFIT},
        },
    )
    workspace.git("commit", "--quiet", "--all", "-m", "overfit check")
    return workspace.run_pipeline("tiny-qa")


@pytest.fixture(params=list(PROFILES))
def profile_run(request: pytest.FixtureRequest) -> ProfileRun:
    return request.getfixturevalue(PROFILES[request.param][0])


def test_tiny_ner_entity_f1_is_above_the_shared_task_baseline(ner_run: ProfileRun) -> None:
    metrics = ner_run.json("metrics/evaluate.json")
    print({key: value for key, value in metrics.items() if "f1" in key})
    assert metrics["test_sentences"] == 3453  # the whole CoNLL-2003 test set
    assert metrics["test_f1"] > MIN_TEST_NER_F1, metrics
    assert metrics["test_f1"] > metrics["baseline_test_f1"], metrics
    assert {f"test_f1_{kind}" for kind in ("LOC", "MISC", "ORG", "PER")} <= metrics.keys()
    assert metrics["baseline_phrases"] > 5000  # every training entity phrase


def test_tiny_qa_learns_its_questions_far_beyond_the_sliding_window(qa_run: ProfileRun) -> None:
    metrics = qa_run.json("metrics/evaluate.json")
    print({key: value for key, value in metrics.items() if "f1" in key or "exact" in key})
    assert metrics["test_questions"] == OVERFIT_QUESTIONS
    assert metrics["test_f1"] > MIN_OVERFIT_QA_F1, metrics
    assert metrics["test_f1_minus_baseline_ci95_low"] > 0, metrics
    samples = qa_run.json("metrics/samples.json")["samples"]
    assert samples and all(sample["answer"] in sample["context"] for sample in samples)


def test_registers_its_task_model_as_champion_and_serves_it(profile_run: ProfileRun) -> None:
    _, model_name = PROFILES[profile_run.profile]
    params = load_params(profile_run.workspace.root / "params.yaml", profile_run.profile)
    assert params.model_name == model_name
    metric, _ = params.registration_metric
    assert metric == "val_f1"
    metrics = profile_run.json("metrics/evaluate.json")
    with profile_run.tracking() as client:
        (version,) = client.search_model_versions(f"name = '{model_name}'")
        assert client.get_model_version_by_alias(model_name, "champion").version == version.version
        assert float(version.tags[f"metric.{metric}"]) == metrics[metric]
        served = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
        if profile_run.profile == "tiny-ner":
            answers = served.predict(pd.DataFrame({"text": [SENTENCE]}))
            (entities,) = answers["entities"]
            assert entities, answers
            for entity in entities:
                assert SENTENCE[entity["start"] : entity["end"]] == entity["text"]
                assert entity["type"] in {"LOC", "MISC", "ORG", "PER"}
            printed = profile_run.workspace.tpl("predict", SENTENCE, "--model", model_name)
            assert printed.returncode == 0, printed.stderr
            assert printed.stdout.rstrip("\n").endswith(f"\t{SENTENCE}")
            assert f"{entities[0]['type']}={entities[0]['text']}" in printed.stdout
        else:
            question, context = _first_question(profile_run)
            answers = served.predict(pd.DataFrame({"question": [question], "context": [context]}))
            assert list(answers.columns) == ["answer", "score", "start", "end"]
            row = answers.iloc[0]
            assert context[row["start"] : row["end"]] == row["answer"]
            printed = profile_run.workspace.tpl(
                "predict", "--question", question, "--context", context, "--model", model_name
            )
            assert printed.returncode == 0, printed.stderr
            assert printed.stdout.startswith(f"{row['answer']}\t")


def _first_question(run: ProfileRun) -> tuple[str, str]:
    params = load_params(run.workspace.root / "params.yaml", run.profile)
    folder = Path(params.dataset_spec.path or "")
    article = json.loads((folder / "questions.json").read_text())["data"][0]
    paragraph = article["paragraphs"][0]
    return paragraph["qas"][0]["question"], paragraph["context"]


def test_dvc_status_is_clean_after_the_run(profile_run: ProfileRun) -> None:
    status = profile_run.workspace.dvc("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout or "{}") == {}, status.stdout
