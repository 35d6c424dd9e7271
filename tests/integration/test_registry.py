"""The MLflow registry round trip on a real (tiny, randomly initialised) classifier: bundle →
pyfunc model → registered version with tags and aliases → champion/challenger promotion →
idempotent re-registration → predictions equal to the in-process model's. Language models and
translators: registered with their decoding defaults, served with per-request params."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from typer.testing import CliRunner

from transformer_pl import precision
from transformer_pl.cli import app
from transformer_pl.data.tokenizer import CLS_ID, SEP_ID, train_tokenizer
from transformer_pl.model import (
    CausalLanguageModel,
    Seq2SeqTransformer,
    SequenceClassifier,
    TransformerConfig,
)
from transformer_pl.params import DecodeParams, ServeParams, TokenizerParams
from transformer_pl.promotion import registration_fingerprint
from transformer_pl.registry import (
    CHALLENGER,
    CHAMPION,
    FINGERPRINT_TAG,
    RegistrationDecision,
    RegistryError,
    load_champion,
    predict_frame,
    register_model,
)
from transformer_pl.tasks.classify.bundle import (
    load_classifier_bundle,
    read_classifier_config,
    save_classifier_bundle,
)
from transformer_pl.tasks.classify.calibration import apply_temperature
from transformer_pl.tasks.classify.predict import classify_texts
from transformer_pl.tasks.lm.module import CausalLMModule
from transformer_pl.tasks.lm.predict import generate_texts
from transformer_pl.tasks.translate.module import TranslatorModule
from transformer_pl.tasks.translate.predict import translate_texts

LABEL_NAMES = ["negative", "neutral", "positive"]
SENTENCES = [
    "the film was wonderful and the acting superb",
    "a dull plot with wooden acting",
    "it was fine, nothing special",
    "I loved every minute of this movie",
    "the worst film I have seen this year",
    "an average story told with some charm",
]
PROBABILITY_COLUMNS = [f"probability_{name}" for name in LABEL_NAMES]


@pytest.fixture(autouse=True)
def fp32_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare predictions with fp32 references to float rounding; on a CPU with bf16
    instructions `classify_texts` would run under bf16 autocast (its own test is below)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WordPiece tokenizer shaped like the pipeline's: [PAD] = 0, [CLS] … [SEP]."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        SENTENCES, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special_tokens)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[(token, tokenizer.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
    )
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def classifier(tokenizer_path: Path) -> SequenceClassifier:
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=Tokenizer.from_file(str(tokenizer_path)).get_vocab_size(),
        d_model=32,
        n_heads=2,
        n_layers=2,
        d_ff=64,
        max_len=32,
        dropout=0.0,
    )
    model = SequenceClassifier(config, num_labels=len(LABEL_NAMES), pooling="mean")
    # Logits of order 1 instead of the head's near-zero initialisation: probabilities neither
    # uniform nor saturated, so comparing them tells models (and padding mistakes) apart.
    torch.nn.init.normal_(model.head.weight, std=config.d_model**-0.5)
    return model.eval()


@pytest.fixture(scope="module")
def bundle_dir(classifier: SequenceClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Without a tokenizer, as the finetune stage writes it: registration adds the tokenizer.
    directory = tmp_path_factory.mktemp("finetune")
    return save_classifier_bundle(classifier, directory, label_names=LABEL_NAMES, max_length=16)


@pytest.fixture(scope="module")
def experiment_id(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway SQLite tracking store with artifacts under tmp; MLflow's globals restored."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("DO_NOT_TRACK", "true")
        patch.chdir(root)  # anything MLflow writes relative to the working directory lands here
        mlflow.set_tracking_uri(uri)
        try:
            yield mlflow.create_experiment("registry", artifact_location=(root / "art").as_uri())
        finally:
            mlflow.set_tracking_uri(None)


def register(
    bundle_dir: Path,
    tokenizer_path: Path,
    experiment_id: str,
    *,
    model_name: str,
    accuracy: float,
    data_hash: str,
    margin: float = 0.0,
    metric_key: str = "val_accuracy",
    greater_is_better: bool = True,
    bundle_fields: dict[str, Any] | None = None,
    evaluation_data: str = "val-v1",
) -> tuple[RegistrationDecision, str]:
    fingerprint = registration_fingerprint("abc123", {"data/processed": data_hash}, {"seed": 42})
    with mlflow.start_run(experiment_id=experiment_id) as run:
        decision = register_model(
            bundle_dir,
            tokenizer_path,
            model_name=model_name,
            metrics={"val_accuracy": accuracy, "val_loss": 1.0 - accuracy},
            tags={
                "git.commit": "abc123",
                "dvc.data/processed": data_hash,
                "prefect.flow_run_id": "r1",
            },
            metric_key=metric_key,
            greater_is_better=greater_is_better,
            champion_margin=margin,
            fingerprint=fingerprint,
            evaluation_data=evaluation_data,
            bundle_fields=bundle_fields,
        )
    return decision, run.info.run_id


def aliases(model_name: str) -> dict[str, str]:
    return {
        alias: str(version)
        for alias, version in MlflowClient().get_registered_model(model_name).aliases.items()
    }


def test_first_version_is_champion_with_lineage_tags_and_logged_decision(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    decision, run_id = register(
        bundle_dir, tokenizer_path, experiment_id, model_name="first", accuracy=0.8, data_hash="d1"
    )

    assert decision.registered and decision.promoted
    assert decision.version == "1" and decision.champion_version == "1"
    assert decision.challenger_metric == 0.8 and decision.champion_metric is None
    assert aliases("first") == {CHAMPION: "1", CHALLENGER: "1"}
    tags = MlflowClient().get_model_version("first", "1").tags
    assert tags["git.commit"] == "abc123"
    assert tags["dvc.data/processed"] == "d1"
    assert tags["prefect.flow_run_id"] == "r1"
    assert float(tags["metric.val_accuracy"]) == 0.8
    assert len(tags[FINGERPRINT_TAG]) == 64
    assert tags["registration"] == "complete" and tags["evaluation_data"] == "val-v1"
    assert json.loads(tags["decision.promoted"]) is True
    assert "first version" in json.loads(tags["decision.reason"])
    run = MlflowClient().get_run(run_id)
    assert run.data.metrics["challenger_val_accuracy"] == 0.8
    assert run.data.tags["registry.promoted"] == "true"
    assert run.data.tags["registry.version"] == "1"


def test_champion_moves_only_for_an_improvement_beyond_the_margin(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    def register_with(accuracy: float, data_hash: str) -> RegistrationDecision:
        decision, _ = register(
            bundle_dir,
            tokenizer_path,
            experiment_id,
            model_name="promotion",
            accuracy=accuracy,
            data_hash=data_hash,
            margin=0.02,
        )
        return decision

    register_with(0.80, "d1")

    worse = register_with(0.70, "d2")
    assert worse.registered and not worse.promoted
    assert (worse.challenger_metric, worse.champion_metric) == (0.70, 0.80)
    assert aliases("promotion") == {CHAMPION: "1", CHALLENGER: "2"}

    within_margin = register_with(0.81, "d3")
    assert not within_margin.promoted
    assert aliases("promotion") == {CHAMPION: "1", CHALLENGER: "3"}

    better = register_with(0.85, "d4")
    assert better.promoted and better.champion_version == "4"
    assert better.champion_metric == 0.80
    assert aliases("promotion") == {CHAMPION: "4", CHALLENGER: "4"}


def test_a_lower_loss_takes_champion_when_lower_is_better(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    def register_with(accuracy: float, data_hash: str) -> RegistrationDecision:
        decision, _ = register(
            bundle_dir,
            tokenizer_path,
            experiment_id,
            model_name="by-loss",
            accuracy=accuracy,
            data_hash=data_hash,
            metric_key="val_loss",
            greater_is_better=False,
        )
        return decision

    register_with(0.5, "d1")
    lower_loss = register_with(0.6, "d2")

    assert lower_loss.promoted
    assert lower_loss.challenger_metric == pytest.approx(0.4)
    assert lower_loss.champion_metric == pytest.approx(0.5)
    assert aliases("by-loss") == {CHAMPION: "2", CHALLENGER: "2"}


def test_same_fingerprint_registers_nothing_new(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    first, _ = register(
        bundle_dir, tokenizer_path, experiment_id, model_name="idem", accuracy=0.8, data_hash="d1"
    )
    again, run_id = register(
        bundle_dir, tokenizer_path, experiment_id, model_name="idem", accuracy=0.9, data_hash="d1"
    )

    assert not again.registered and not again.promoted
    assert again.version == first.version == "1"
    assert "unchanged" in again.reason
    assert len(MlflowClient().search_model_versions("name = 'idem'")) == 1
    assert MlflowClient().get_run(run_id).data.tags["registry.registered"] == "false"


def test_versions_scored_on_other_validation_data_never_compete(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    register(
        bundle_dir, tokenizer_path, experiment_id, model_name="data", accuracy=0.80, data_hash="d1"
    )
    # A much "better" figure on another val set (a tiny profile's, say) does not dethrone it.
    other, _ = register(
        bundle_dir,
        tokenizer_path,
        experiment_id,
        model_name="data",
        accuracy=0.99,
        data_hash="d2",
        evaluation_data="val-tiny",
    )
    assert other.registered and not other.promoted
    assert other.champion_metric is None and other.champion_evaluation_data == "val-v1"
    assert "other validation data" in other.reason
    assert aliases("data") == {CHAMPION: "1", CHALLENGER: "2"}


class Interrupted(BaseException):
    """Stands for the process being killed (not an Exception: nothing may catch it)."""


@pytest.mark.parametrize("with_champion", [False, True])
def test_a_registration_killed_before_its_aliases_moved_is_completed_by_the_rerun(
    bundle_dir: Path,
    tokenizer_path: Path,
    experiment_id: str,
    monkeypatch: pytest.MonkeyPatch,
    with_champion: bool,
) -> None:
    name = f"killed-{with_champion}"
    if with_champion:
        register(
            bundle_dir, tokenizer_path, experiment_id, model_name=name, accuracy=0.7, data_hash="d0"
        )
    set_alias = MlflowClient.set_registered_model_alias

    def killed(*args: Any, **kwargs: Any) -> None:
        raise Interrupted

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", killed)
    with pytest.raises(Interrupted):
        register(
            bundle_dir, tokenizer_path, experiment_id, model_name=name, accuracy=0.8, data_hash="d1"
        )
    new_version = "2" if with_champion else "1"
    pending = MlflowClient().get_model_version(name, new_version)
    assert pending.tags["registration"] == "pending"

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_alias)
    rerun, _ = register(
        bundle_dir, tokenizer_path, experiment_id, model_name=name, accuracy=0.8, data_hash="d1"
    )
    assert rerun.registered and rerun.promoted and rerun.version == new_version
    assert aliases(name) == {CHAMPION: new_version, CHALLENGER: new_version}
    assert MlflowClient().get_model_version(name, new_version).tags["registration"] == "complete"
    assert len(MlflowClient().search_model_versions(f"name = '{name}'")) == int(new_version)

    again, _ = register(
        bundle_dir, tokenizer_path, experiment_id, model_name=name, accuracy=0.8, data_hash="d1"
    )
    assert not again.registered and "unchanged" in again.reason


def test_a_permanent_registry_error_is_named_and_a_transient_one_left_to_retries(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    def refuse(code: int) -> Any:
        def set_alias(*args: Any, **kwargs: Any) -> None:
            raise MlflowException("refused", error_code=code)

        return set_alias

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse(INVALID_PARAMETER_VALUE))
    with pytest.raises(RegistryError, match="Retrying will not help"):
        register(
            bundle_dir, tokenizer_path, experiment_id, model_name="err", accuracy=0.8, data_hash="a"
        )
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse(INTERNAL_ERROR))
    with pytest.raises(MlflowException) as transient:
        register(
            bundle_dir, tokenizer_path, experiment_id, model_name="err", accuracy=0.8, data_hash="a"
        )
    assert not isinstance(transient.value, RegistryError)


def test_promotion_on_a_test_metric_is_refused(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    with pytest.raises(ValueError, match="validation metrics only"):
        register(
            bundle_dir,
            tokenizer_path,
            experiment_id,
            model_name="on-test",
            accuracy=0.8,
            data_hash="d1",
            metric_key="test_accuracy",
        )


def test_registration_fingerprint_covers_commit_data_and_params() -> None:
    base = registration_fingerprint("c1", {"a": "h1", "b": "h2"}, {"lr": 0.1, "seed": 1})

    assert base == registration_fingerprint("c1", {"b": "h2", "a": "h1"}, {"seed": 1, "lr": 0.1})
    assert base != registration_fingerprint("c2", {"a": "h1", "b": "h2"}, {"lr": 0.1, "seed": 1})
    assert base != registration_fingerprint("c1", {"a": "h1", "b": "h3"}, {"lr": 0.1, "seed": 1})
    assert base != registration_fingerprint("c1", {"a": "h1", "b": "h2"}, {"lr": 0.2, "seed": 1})


@pytest.fixture(scope="module")
def champion_name(bundle_dir: Path, tokenizer_path: Path, experiment_id: str) -> str:
    register(
        bundle_dir, tokenizer_path, experiment_id, model_name="serve", accuracy=0.8, data_hash="d1"
    )
    return "serve"


def test_champion_pyfunc_predicts_the_in_process_models_softmax(
    champion_name: str, tokenizer_path: Path, classifier: SequenceClassifier
) -> None:
    # Different lengths (padding in a batch) and one text far beyond max_length: it is read in
    # windows, all alike, so it scores as its first window does.
    texts = [*SENTENCES, "wonderful " * 100]

    predictions = load_champion(champion_name).predict(pd.DataFrame({"text": texts}))

    assert list(predictions.columns) == ["label", "label_id", *PROBABILITY_COLUMNS]
    assert len(predictions) == len(texts)
    probabilities = torch.tensor(predictions[PROBABILITY_COLUMNS].to_numpy())
    torch.testing.assert_close(
        probabilities.sum(dim=1), torch.ones(len(texts), dtype=torch.float64)
    )
    # Reference: the in-process model, one unpadded text at a time.
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_truncation(max_length=16)
    with torch.no_grad():
        expected = torch.cat(
            [
                classifier(torch.tensor([tokenizer.encode(text).ids])).logits.softmax(dim=-1)
                for text in texts
            ]
        ).double()
    torch.testing.assert_close(probabilities, expected, rtol=1e-4, atol=1e-5)
    assert predictions["label_id"].tolist() == expected.argmax(dim=1).tolist()
    assert predictions["label"].tolist() == [LABEL_NAMES[i] for i in expected.argmax(dim=1)]
    # Another batch, other padding: equal up to float rounding.
    pd.testing.assert_frame_equal(
        predict_frame(champion_name, pd.DataFrame({"text": texts[:2]})),
        predictions.iloc[:2],
        rtol=1e-4,
        atol=1e-6,
    )


def test_a_registered_temperature_calibrates_what_the_model_serves(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str, champion_name: str
) -> None:
    # register adds the temperature evaluate fitted; the training bundle itself has T = 1.
    register(
        bundle_dir,
        tokenizer_path,
        experiment_id,
        model_name="calibrated",
        accuracy=0.8,
        data_hash="d1",
        bundle_fields={"temperature": 2.5},
    )
    assert read_classifier_config(bundle_dir).temperature == 1.0
    texts = [*SENTENCES, "wonderful " * 100]

    calibrated = predict_frame("calibrated", pd.DataFrame({"text": texts}))
    uncalibrated = predict_frame(champion_name, pd.DataFrame({"text": texts}))

    expected = apply_temperature(uncalibrated[PROBABILITY_COLUMNS].to_numpy(), 2.5)
    np.testing.assert_allclose(calibrated[PROBABILITY_COLUMNS].to_numpy(), expected, atol=1e-6)
    assert calibrated["label"].tolist() == uncalibrated["label"].tolist()
    # Softer: every top probability moves towards 1/n_classes.
    top = uncalibrated[PROBABILITY_COLUMNS].to_numpy().max(axis=1)
    assert (calibrated[PROBABILITY_COLUMNS].to_numpy().max(axis=1) < top).all()


def test_cli_predict_prints_label_and_probabilities(champion_name: str) -> None:
    result = CliRunner().invoke(
        app, ["predict", SENTENCES[0], SENTENCES[1], "--model", champion_name]
    )

    assert result.exit_code == 0, result.output
    expected = predict_frame(champion_name, pd.DataFrame({"text": SENTENCES[:2]}))
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, text, (_, row) in zip(lines, SENTENCES, expected.iterrows(), strict=False):
        label, probabilities, printed_text = line.split("\t")
        assert (label, printed_text) == (row["label"], text)
        assert probabilities.split() == [
            f"{name}={row[f'probability_{name}']:.3f}" for name in LABEL_NAMES
        ]


def test_cli_predict_reports_a_missing_alias(champion_name: str) -> None:
    result = CliRunner().invoke(
        app, ["predict", "text", "--model", champion_name, "--alias", "nope"]
    )

    assert result.exit_code == 1
    assert f"models:/{champion_name}@nope" in result.stderr


def test_bundle_round_trip_restores_the_model(
    bundle_dir: Path, tokenizer_path: Path, classifier: SequenceClassifier
) -> None:
    model, tokenizer, config = load_classifier_bundle(bundle_dir, tokenizer_path)

    assert config.label_names == tuple(LABEL_NAMES) and config.max_length == 16
    assert config.model == classifier.config and config.pooling == "mean"
    input_ids = torch.tensor([tokenizer.encode(SENTENCES[0]).ids])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, classifier(input_ids).logits)


def test_batches_of_any_size_classify_like_one_text_at_a_time(
    bundle_dir: Path, tokenizer_path: Path
) -> None:
    # Batched by length: each row must still land at its own text's position.
    model, tokenizer, config = load_classifier_bundle(bundle_dir, tokenizer_path)
    texts = [SENTENCES[2], "wonderful " * 100, SENTENCES[0], "dull", *SENTENCES[3:]]

    alone = pd.concat(
        [classify_texts(model, tokenizer, config, [text]) for text in texts], ignore_index=True
    )
    for batch_size in (2, 3, 32):
        pd.testing.assert_frame_equal(
            classify_texts(model, tokenizer, config, texts, batch_size), alone, rtol=1e-4, atol=1e-6
        )
    assert classify_texts(model, tokenizer, config, []).shape == (0, 2 + len(LABEL_NAMES))


def test_classify_texts_runs_under_bf16_where_the_cpu_has_it(
    bundle_dir: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer, config = load_classifier_bundle(bundle_dir, tokenizer_path)
    texts = [*SENTENCES, "wonderful " * 100]
    full = classify_texts(model, tokenizer, config, texts)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)

    halved = classify_texts(model, tokenizer, config, texts)

    # bf16 keeps 8 bits of mantissa: close to fp32, but not to float rounding.
    difference = (halved[PROBABILITY_COLUMNS] - full[PROBABILITY_COLUMNS]).abs().to_numpy()
    assert 0 < difference.max() < 0.02
    assert halved["label"].tolist() == full["label"].tolist()


def test_a_text_beyond_max_length_scores_the_mean_of_its_windows(
    bundle_dir: Path, tokenizer_path: Path, classifier: SequenceClassifier
) -> None:
    model, tokenizer, config = load_classifier_bundle(bundle_dir, tokenizer_path)
    long_text = " ".join(SENTENCES[1:])
    ids = tokenizer.encode(long_text, add_special_tokens=False).ids
    room = config.max_length - 2
    assert 2 * room < len(ids) < 3 * room  # two full windows and an overlapping last one
    windows = [ids[:room], ids[room : 2 * room], ids[-room:]]
    with torch.no_grad():
        expected = torch.stack(
            [
                classifier(torch.tensor([[CLS_ID, *window, SEP_ID]])).logits.softmax(dim=-1)[0]
                for window in windows
            ]
        ).mean(dim=0)
        first_window_only = classifier(torch.tensor([[CLS_ID, *windows[0], SEP_ID]])).logits

    predictions = classify_texts(model, tokenizer, config, [SENTENCES[0], long_text])

    probabilities = torch.tensor(predictions[PROBABILITY_COLUMNS].to_numpy())
    torch.testing.assert_close(probabilities[1], expected.double(), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(probabilities[1], first_window_only.softmax(dim=-1)[0].double())


def test_bundle_of_another_task_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "bundle"
    other.mkdir()
    for name in ("model.safetensors", "config.json"):
        (other / name).write_bytes((bundle_dir / name).read_bytes())
    config = (other / "config.json").read_text().replace('"classify"', '"translate"')
    (other / "config.json").write_text(config)

    with pytest.raises(ValueError, match="not a classification bundle"):
        load_classifier_bundle(other)


# --- language models and translators ------------------------------------------------------------

SEQUENCE_TASKS = {
    "lm": (CausalLMModule, CausalLanguageModel, "continuation", {}),
    "translate": (
        TranslatorModule,
        Seq2SeqTransformer,
        "translation",
        {"source_language": "de", "target_language": "en"},
    ),
}


@pytest.mark.parametrize("task", list(SEQUENCE_TASKS))
def test_sequence_model_serves_its_registered_decoding_and_request_params(
    task: str, experiment_id: str, classifier: SequenceClassifier, tmp_path: Path
) -> None:
    task_class, model_class, column, fields = SEQUENCE_TASKS[task]
    tokenizer_file = tmp_path / "tokenizer.json"
    tokenizer_params = TokenizerParams(kind="bpe", vocab_size=300, min_frequency=1)
    train_tokenizer(SENTENCES * 3, tokenizer_params).save(str(tokenizer_file))
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    torch.manual_seed(0)
    config = dataclasses.replace(classifier.config, vocab_size=tokenizer.get_vocab_size())
    exported = task_class(config)
    exported.export_weights(tmp_path / "bundle", max_length=16, **fields)  # as finetune does
    model = model_class(config)
    model.load_state_dict(exported.model.state_dict())
    model.eval()
    decoding = DecodeParams(max_new_tokens=5, beam_size=2, length_penalty=1.0)
    name = f"sequence-{task}"

    decision, _ = register(
        tmp_path / "bundle",
        tokenizer_file,
        experiment_id,
        model_name=name,
        accuracy=1.0,
        data_hash=task,
        bundle_fields={"decoding": decoding.model_dump()},
    )
    assert decision.promoted

    served = load_champion(name)
    defaults = {param.name: param.default for param in served.metadata.get_params_schema().params}
    assert defaults["max_new_tokens"] == 5
    texts = SENTENCES[:3]
    greedy = decoding.model_copy(update={"beam_size": 1})

    def expected(settings: DecodeParams) -> list[str]:
        if task == "lm":
            return generate_texts(model, tokenizer, texts, settings)
        return translate_texts(model, tokenizer, texts, settings, max_length=16)

    frame = pd.DataFrame({"text": texts})
    assert served.predict(frame)[column].tolist() == expected(decoding)
    overrides = {"beam_size": 1} if task == "translate" else {"max_new_tokens": 2}
    assert served.predict(frame, params=overrides)[column].tolist() == expected(
        greedy if task == "translate" else decoding.model_copy(update=overrides)
    )

    result = CliRunner().invoke(app, ["predict", texts[0], "--model", name])
    assert result.exit_code == 0, result.output
    answer = expected(decoding)[0].replace("\n", "\\n")
    assert result.stdout.rstrip("\n") == f"{answer}\t{texts[0]}"

    # Decoding a request may ask for is capped by the serving limits (defaults here).
    limit, too_much = (
        ("max_beam_size", {"beam_size": 9})
        if task == "translate"
        else ("max_new_tokens", {"max_new_tokens": 513})
    )
    with pytest.raises(MlflowException, match=rf"serve\.{limit}"):
        served.predict(frame, params=too_much)


def test_a_request_beyond_the_registered_limits_is_refused_naming_the_limit(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    limits = ServeParams(max_rows=2, max_text_chars=60)
    fingerprint = registration_fingerprint("abc123", {"data": "limits"}, {})
    with mlflow.start_run(experiment_id=experiment_id):
        register_model(
            bundle_dir,
            tokenizer_path,
            model_name="limited",
            metrics={"val_accuracy": 0.5},
            tags={},
            metric_key="val_accuracy",
            champion_margin=0.0,
            fingerprint=fingerprint,
            evaluation_data="val-v1",
            serving_limits=limits,
        )
    model = load_champion("limited")
    assert len(model.predict(pd.DataFrame({"text": SENTENCES[:2]}))) == 2
    with pytest.raises(MlflowException, match=r"3 rows.*serve\.max_rows") as too_many:
        model.predict(pd.DataFrame({"text": SENTENCES[:3]}))
    assert too_many.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match=r"serve\.max_text_chars"):
        model.predict(pd.DataFrame({"text": ["word " * 20]}))


def test_the_decision_records_the_paired_difference_from_a_champion_on_the_same_val_data(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str, tmp_path: Path
) -> None:
    from transformer_pl.params import load_params
    from transformer_pl.stages.evaluation import _champion_comparison
    from transformer_pl.tasks.catalog import task_named

    labels = np.array([0, 1] * 100)
    champion_val, challenger_val = tmp_path / "v1" / "val.parquet", tmp_path / "v2" / "val.parquet"
    for path, wrong in ((champion_val, 40), (challenger_val, 10)):
        path.parent.mkdir()
        predicted = labels.copy()
        predicted[:wrong] = 1 - predicted[:wrong]
        pd.DataFrame({"label": labels, "predicted_model": predicted}).to_parquet(path)
    params = load_params(Path(__file__).parents[2] / "params.yaml")

    def register_version(val: Path, accuracy: float, data_hash: str) -> RegistrationDecision:
        with mlflow.start_run(experiment_id=experiment_id):
            return register_model(
                bundle_dir,
                tokenizer_path,
                model_name="paired",
                metrics={"val_accuracy": accuracy},
                tags={},
                metric_key="val_accuracy",
                champion_margin=0.0,
                fingerprint=registration_fingerprint("c", {"d": data_hash}, {}),
                evaluation_data="val-v1",
                evaluation_artifacts=[val],
                compare_with_champion=_champion_comparison(params, task_named("classify"), val),
            )

    first = register_version(champion_val, 0.80, "d1")
    assert first.champion_comparison is None  # no champion to pair with
    second = register_version(challenger_val, 0.95, "d2")

    comparison = second.champion_comparison
    assert comparison["val_accuracy_minus_champion"] == pytest.approx(0.15)
    assert 0 < comparison["val_accuracy_minus_champion_ci95_low"] < 0.15
    assert comparison["val_accuracy_minus_champion_mcnemar_p"] < 0.01
    tags = MlflowClient().get_model_version("paired", second.version).tags
    assert json.loads(tags["decision.champion_comparison"]) == comparison


def test_tpl_promote_moves_champion_by_hand_and_records_it(
    bundle_dir: Path, tokenizer_path: Path, experiment_id: str
) -> None:
    register(
        bundle_dir, tokenizer_path, experiment_id, model_name="manual", accuracy=0.8, data_hash="a"
    )
    register(
        bundle_dir,
        tokenizer_path,
        experiment_id,
        model_name="manual",
        accuracy=0.9,
        data_hash="b",
        evaluation_data="val-v2",
    )
    assert aliases("manual")[CHAMPION] == "1"  # other val data: not compared

    result = CliRunner().invoke(app, ["promote", "2", "--model", "manual"])
    assert result.exit_code == 0, result.output
    assert aliases("manual")[CHAMPION] == "2"
    assert MlflowClient().get_model_version("manual", "2").tags["promoted_by_hand"] == "true"

    missing = CliRunner().invoke(app, ["promote", "7", "--model", "manual"])
    assert missing.exit_code == 1 and "Retrying will not help" in missing.output
