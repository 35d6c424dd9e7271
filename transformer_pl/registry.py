"""MLflow Model Registry: the portable pyfunc model, registration, champion/challenger promotion.

A *bundle* is what training hands to the registry, a directory holding

    model.safetensors   the task model's state dict (safetensors: tensors only, no pickles)
    config.json         {"task": ..., "model": TransformerConfig.to_dict(), ...the task's fields}
    tokenizer.json      a Hugging Face `tokenizers` file (optional in a training bundle, which
                        may name its tokenizer separately; the registered copy always has one)

For task "classify" the task's fields are `num_labels`, `label_names` (index = class id),
`pooling` ("mean", "max", "mean_max" or "cls"), `max_length` (the longest input the model
was trained on, special tokens included; longer texts are read in windows of that length:
`classify_texts`) and `temperature` (the calibration the served probabilities get,
`transformer_pl.calibration`; 1 in a training bundle, the one evaluate fitted once registered).
`save_classifier_bundle` writes this format and `load_classifier_bundle` reads it.
Language-model ("clm") and translation ("translate") bundles are described, loaded and run by
`transformer_pl.inference`; registering one adds its decoding defaults to its config.json.

Every registered model takes a DataFrame with a `text` column — texts to classify, prompts to
continue, sentences to translate — and answers one row per text. Generation and translation
take their decoding settings (`DecodeParams` fields) as MLflow `params` per request.

The registered model is a pyfunc logged as code (MLflow 3 refuses to unpickle models by
default): MLflow runs a three-line entry file that instantiates a class from this module, and
the `transformer_pl` package travels with the model as `code_paths`, so a served model imports
the code it was registered with.

Aliases replace stages: `challenger` is the latest registered version, `champion` the one that
serves. A new version takes `champion` only when it beats the current champion by more than a
margin on the chosen *validation* metric, measured on the same validation data; the first
version is champion at once. Registration is a recoverable transaction (`register_model`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, ClassVar, Literal

import mlflow
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch import Tensor

from transformer_pl.calibration import apply_temperature
from transformer_pl.config import DecodeParams, ServeParams
from transformer_pl.data.tokenizer import CLS_ID, SEP_ID
from transformer_pl.inference import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    generate_texts,
    load_sequence_bundle,
    pad_right,
    read_sequence_config,
    token_ids,
    translate_texts,
)
from transformer_pl.model import Pooling, SequenceClassifier, TransformerConfig
from transformer_pl.precision import native_bf16_autocast

CHAMPION = "champion"
CHALLENGER = "challenger"
FINGERPRINT_TAG = "fingerprint"
METRIC_TAG_PREFIX = "metric."
VALIDATION_PREFIX = "val_"  # the only metrics promotion may decide on
EVALUATION_DATA_TAG = (
    "evaluation_data"  # fingerprint of the validation data a version was scored on
)
DECISION_TAG_PREFIX = "decision."
PROMOTED_BY_HAND_TAG = "promoted_by_hand"  # `tpl promote`: a person moved champion here
STATE_TAG = "registration"  # pending from version creation until the aliases have moved
PENDING, COMPLETE = "pending", "complete"
TEXT_COLUMN = "text"
PROBABILITY_PREFIX = "probability_"

# Names inside the logged model: its artifact folder in the run and its bundle artifact.
MODEL_ARTIFACT_NAME = "model"
BUNDLE_ARTIFACT = "bundle"
SERVING_FILE = "serving.json"  # in a registered bundle: the request limits (ServeParams)
EVALUATION_ARTIFACTS = "evaluation"  # the run folder of what a version was evaluated on
PREDICT_BATCH_SIZE = 32

# The models-from-code entry file MLflow executes to build the model: no pickled objects.
_MODEL_CODE = '''\
"""MLflow entry point written by transformer_pl.registry: builds the pyfunc model."""

import mlflow

from transformer_pl.registry import {class_name}

mlflow.models.set_model({class_name}())
'''


# --- the bundle -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierBundleConfig:
    """config.json of a classification bundle."""

    model: TransformerConfig
    num_labels: int
    label_names: tuple[str, ...]
    pooling: Pooling = "mean"
    max_length: int = 256
    temperature: float = 1.0
    task: Literal["classify"] = "classify"

    def __post_init__(self) -> None:
        if len(self.label_names) != self.num_labels:
            raise ValueError(
                f"num_labels is {self.num_labels} but label_names has {len(self.label_names)} "
                f"entries: {list(self.label_names)}"
            )
        if len(set(self.label_names)) != self.num_labels:
            raise ValueError(f"label_names must be distinct, got {list(self.label_names)}")
        if not 2 < self.max_length <= self.model.max_len:
            raise ValueError(
                f"max_length must be in (2, model.max_len={self.model.max_len}], "
                f"got {self.max_length}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model.to_dict(),
            "num_labels": self.num_labels,
            "label_names": list(self.label_names),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierBundleConfig:
        if data.get("task") != "classify":
            raise ValueError(f"not a classification bundle: task is {data.get('task')!r}")
        expected = {
            "task",
            "model",
            "num_labels",
            "label_names",
            "pooling",
            "max_length",
            "temperature",
        }
        if unknown := set(data) - expected:
            raise ValueError(f"unknown bundle config key(s): {sorted(unknown)}")
        return cls(
            model=TransformerConfig.from_dict(data["model"]),
            num_labels=int(data["num_labels"]),
            label_names=tuple(data["label_names"]),
            pooling=data.get("pooling", "mean"),
            max_length=int(data.get("max_length", 256)),
            temperature=float(data.get("temperature", 1.0)),
        )


def _read_bundle_config(directory: str | Path) -> dict[str, Any]:
    return json.loads(_bundle_file(directory, CONFIG_FILE).read_text(encoding="utf-8"))


def bundle_task(directory: str | Path) -> str:
    """The `task` a bundle's config.json declares (which decides how it is loaded and served)."""
    return _read_bundle_config(directory)["task"]


def read_classifier_config(directory: str | Path) -> ClassifierBundleConfig:
    return ClassifierBundleConfig.from_dict(_read_bundle_config(directory))


def save_classifier_bundle(
    model: SequenceClassifier,
    directory: str | Path,
    *,
    label_names: Sequence[str],
    max_length: int,
    tokenizer_path: str | Path | None = None,
) -> Path:
    """Write `model` as a classification bundle (plus a copy of the tokenizer, when given)."""
    directory = Path(directory)
    config = ClassifierBundleConfig(
        model=model.config,
        num_labels=model.head.out_features,
        label_names=tuple(label_names),
        pooling=model.pooling,
        max_length=max_length,
    )
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, directory / TOKENIZER_FILE)
    return directory


def load_classifier_bundle(
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[SequenceClassifier, Tokenizer, ClassifierBundleConfig]:
    """Load a classification bundle for inference: the model in eval mode, and its tokenizer
    (the bundle's own unless `tokenizer_path` is given)."""
    config = read_classifier_config(directory)
    model = SequenceClassifier(config.model, config.num_labels, pooling=config.pooling)
    load_model(model, str(_bundle_file(directory, WEIGHTS_FILE)))
    model.eval()

    tokenizer_file = Path(tokenizer_path) if tokenizer_path else Path(directory) / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"tokenizer not found: {tokenizer_file}")
    return model, Tokenizer.from_file(str(tokenizer_file)), config


def _bundle_file(directory: str | Path, name: str) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise FileNotFoundError(f"bundle file missing: {path}")
    return path


# --- inference --------------------------------------------------------------------------------


def text_windows(ids: Sequence[int], room: int) -> list[Sequence[int]]:
    """Windows of `room` ids that cover `ids`: consecutive from the start, the last one aligned to
    the end (it overlaps the one before), so every window is `room` ids long. A text that fits
    is its one window."""
    if len(ids) <= room:
        return [ids]
    starts = [*range(0, len(ids) - room, room), len(ids) - room]
    return [ids[start : start + room] for start in starts]


@torch.no_grad()
def classify_texts(
    model: SequenceClassifier,
    tokenizer: Tokenizer,
    config: ClassifierBundleConfig,
    texts: Sequence[str],
    batch_size: int = PREDICT_BATCH_SIZE,
) -> pd.DataFrame:
    """One row per text: `label` (name), `label_id` and `probability_<label>` for every class.

    Each input is `[CLS] ids [SEP]`, as the encode stage built the training inputs. A text longer
    than the model's `max_length` is read in windows of that length covering all of it
    (`text_windows`), and its probabilities are the mean of its windows': the end of a long
    review counts as much as its start. Inputs are batched by length, each batch cut to its
    longest input: padding every input to max_length would waste the work on short texts.
    Where the hardware has bf16 instructions the forward pass runs under bf16 autocast, faster
    than fp32 (see bench/RESULTS.md for its effect on accuracy). Last, the bundle's
    `temperature` calibrates the probabilities (`apply_temperature`).
    """
    room = config.max_length - 2
    pad_id = config.model.pad_token_id
    inputs: list[Tensor] = []
    owners: list[int] = []  # the text each input reads
    for index, ids in enumerate(token_ids(tokenizer, texts)):
        for window in text_windows(ids, room):
            inputs.append(torch.tensor([CLS_ID, *window, SEP_ID]))
            owners.append(index)
    input_probabilities = torch.empty(len(inputs), config.num_labels)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        input_ids = pad_right([inputs[i] for i in batch], value=pad_id)
        with native_bf16_autocast(input_ids.device):
            logits = model(input_ids, (input_ids != pad_id).long()).logits
        input_probabilities[batch] = logits.float().softmax(dim=-1)
    owner = torch.tensor(owners, dtype=torch.long)
    windows_per_text = torch.bincount(owner, minlength=len(texts)).unsqueeze(1)
    probabilities = (
        torch.zeros(len(texts), config.num_labels).index_add_(0, owner, input_probabilities)
        / windows_per_text
    )
    calibrated = apply_temperature(probabilities.numpy().astype("float64"), config.temperature)
    label_ids = calibrated.argmax(axis=1)
    return pd.DataFrame(
        {
            "label": [config.label_names[i] for i in label_ids.tolist()],
            "label_id": label_ids.astype("int64"),
            **{
                f"{PROBABILITY_PREFIX}{name}": calibrated[:, i]
                for i, name in enumerate(config.label_names)
            },
        }
    )


class _BundleModel(mlflow.pyfunc.PythonModel):
    """A pyfunc over a registered bundle: a DataFrame with a `text` column in, a row per text
    out. Subclasses name the bundle loader and answer the texts. A request beyond the bundle's
    serving limits (`serving.json`; ServeParams' defaults for a bundle registered without one)
    is refused with an error naming the limit, which the scoring server answers with a 400."""

    load_bundle: ClassVar[Callable[[str], tuple[Any, Tokenizer, Any]]]

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        directory = context.artifacts[BUNDLE_ARTIFACT]
        self.model, self.tokenizer, self.config = self.load_bundle(directory)
        limits = Path(directory) / SERVING_FILE
        self.limits = (
            ServeParams.model_validate_json(limits.read_text(encoding="utf-8"))
            if limits.is_file()
            else ServeParams()
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        texts = model_input[TEXT_COLUMN].astype(str).tolist()
        if len(texts) > self.limits.max_rows:
            raise _refused(
                f"{len(texts)} rows in one request; at most {self.limits.max_rows}", "max_rows"
            )
        longest = max((len(text) for text in texts), default=0)
        if longest > self.limits.max_text_chars:
            raise _refused(
                f"a text of {longest} characters; at most {self.limits.max_text_chars}",
                "max_text_chars",
            )
        return self.answer(texts, params or {})

    def answer(self, texts: list[str], params: dict[str, Any]) -> pd.DataFrame:
        raise NotImplementedError


def _refused(what: str, limit: str) -> MlflowException:
    """A request beyond a serving limit: INVALID_PARAMETER_VALUE, which serves as a 400."""
    return MlflowException(
        f"request refused: {what} (serve.{limit}, registered with the model)",
        error_code=INVALID_PARAMETER_VALUE,
    )


class TransformerClassifierModel(_BundleModel):
    """Text classification pyfunc: one row of label and class probabilities per text (see
    `classify_texts`)."""

    load_bundle = staticmethod(load_classifier_bundle)

    def answer(self, texts: list[str], params: dict[str, Any]) -> pd.DataFrame:
        return classify_texts(self.model, self.tokenizer, self.config, texts)

    @staticmethod
    def signature(bundle_directory: Path) -> ModelSignature:
        config = read_classifier_config(bundle_directory)
        probabilities = [
            ColSpec("double", f"{PROBABILITY_PREFIX}{name}") for name in config.label_names
        ]
        return ModelSignature(
            inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
            outputs=Schema(
                [ColSpec("string", "label"), ColSpec("long", "label_id"), *probabilities]
            ),
        )

    @staticmethod
    def input_example() -> pd.DataFrame:
        return pd.DataFrame({TEXT_COLUMN: ["An example sentence to classify."]})


# MLflow's types for the decoding settings a request may set.
DECODE_PARAM_TYPES = {
    "max_new_tokens": "long",
    "stop_at_eos": "boolean",
    "do_sample": "boolean",
    "temperature": "double",
    "top_k": "long",
    "top_p": "double",
    "seed": "long",
    "beam_size": "long",
    "length_penalty": "double",
}


class _SequenceModel(_BundleModel):
    """A pyfunc over a sequence bundle: one `output_column` string per text. Request `params`
    override the bundle's decoding defaults."""

    load_bundle = staticmethod(load_sequence_bundle)
    output_column: ClassVar[str]
    decoding_params: ClassVar[tuple[str, ...]]  # the DecodeParams fields a request may set
    example: ClassVar[str]

    def answer(self, texts: list[str], params: dict[str, Any]) -> pd.DataFrame:
        decoding = DecodeParams.model_validate({**self.config.decoding.model_dump(), **params})
        if decoding.max_new_tokens > self.limits.max_new_tokens:
            raise _refused(
                f"max_new_tokens {decoding.max_new_tokens}; at most {self.limits.max_new_tokens}",
                "max_new_tokens",
            )
        if decoding.beam_size > self.limits.max_beam_size:
            raise _refused(
                f"beam_size {decoding.beam_size}; at most {self.limits.max_beam_size}",
                "max_beam_size",
            )
        return pd.DataFrame({self.output_column: self._decode(texts, decoding)})

    def _decode(self, texts: list[str], decoding: DecodeParams) -> list[str]:
        raise NotImplementedError

    @classmethod
    def signature(cls, bundle_directory: Path) -> ModelSignature:
        decoding = read_sequence_config(bundle_directory).decoding
        return ModelSignature(
            inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
            outputs=Schema([ColSpec("string", cls.output_column)]),
            params=ParamSchema(
                [
                    ParamSpec(name, DECODE_PARAM_TYPES[name], getattr(decoding, name))
                    for name in cls.decoding_params
                ]
            ),
        )

    @classmethod
    def input_example(cls) -> pd.DataFrame:
        return pd.DataFrame({TEXT_COLUMN: [cls.example]})


class TransformerGeneratorModel(_SequenceModel):
    """Text generation pyfunc: prompts in, their `continuation`s out (see `generate_texts`)."""

    output_column = "continuation"
    decoding_params = (
        "max_new_tokens",
        "stop_at_eos",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "seed",
    )
    example = "The"

    def _decode(self, texts: list[str], decoding: DecodeParams) -> list[str]:
        return generate_texts(self.model, self.tokenizer, texts, decoding, PREDICT_BATCH_SIZE)


class TransformerTranslatorModel(_SequenceModel):
    """Translation pyfunc: source sentences in, their `translation`s out (see
    `translate_texts`)."""

    output_column = "translation"
    decoding_params = ("max_new_tokens", "beam_size", "length_penalty")
    example = "A sentence to translate."

    def _decode(self, texts: list[str], decoding: DecodeParams) -> list[str]:
        return translate_texts(
            self.model,
            self.tokenizer,
            texts,
            decoding,
            self.config.max_length,
            PREDICT_BATCH_SIZE,
        )


# The pyfunc class that serves each bundle task.
PYFUNC_MODELS: dict[str, type[mlflow.pyfunc.PythonModel]] = {
    "classify": TransformerClassifierModel,
    "clm": TransformerGeneratorModel,
    "translate": TransformerTranslatorModel,
}


# --- registration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationDecision:
    """What `register_model` did. `version` is the new version, or (when `registered` is False)
    the existing version with the same fingerprint. `champion_metric` is the metric of the
    champion the challenger was compared with (None when there was none, or when it was
    evaluated on other data and so not compared)."""

    model_name: str
    version: str
    registered: bool
    promoted: bool
    champion_version: str | None
    metric_key: str
    challenger_metric: float | None
    champion_metric: float | None
    evaluation_data: str
    champion_evaluation_data: str | None
    reason: str
    # The paired difference from the champion on the shared val data (`<metric>_minus_champion`
    # and its 95% interval), when both versions' per-example predictions are at hand.
    champion_comparison: dict[str, float] | None = None


def registration_fingerprint(
    git_commit: str, data_hashes: Mapping[str, str], params: Mapping[str, Any]
) -> str:
    """A hash of everything a model version is made from: equal inputs, equal fingerprint
    (independent of key order)."""
    payload = {"git_commit": git_commit, "data": dict(data_hashes), "params": dict(params)}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class RegistryError(RuntimeError):
    """The registry refused a request for good (not a transient outage): retrying cannot help,
    and the message says what to do."""


# MLflow error codes of a registry that is down or busy: the request may succeed if retried.
TRANSIENT_ERROR_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
)


def register_model(
    bundle_dir: str | Path,
    tokenizer_path: str | Path,
    *,
    model_name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    metric_key: str,
    champion_margin: float,
    fingerprint: str,
    evaluation_data: str,
    greater_is_better: bool = True,
    run_id: str | None = None,
    bundle_fields: Mapping[str, Any] | None = None,
    serving_limits: ServeParams | None = None,
    evaluation_artifacts: Sequence[Path] = (),
    compare_with_champion: Callable[[ModelVersion], dict[str, float] | None] | None = None,
) -> RegistrationDecision:
    """Log the bundle as a pyfunc model, register it as a new version of `model_name` and move
    the aliases: `challenger` always, `champion` when the new version beats the champion's
    `metric_key` (a validation metric) by more than `champion_margin` on the same validation
    data (`evaluation_data`, a fingerprint of it), or when there is no champion yet. A champion
    evaluated on other data is never compared: the new version stays challenger, and a person
    moves `champion` (`tpl promote`).

    A recoverable transaction: the version is created tagged `registration=pending`, the
    decision is written on it, the aliases move, and only then is it tagged `complete`. A rerun
    after a crash anywhere in between finds the pending version by its `fingerprint` and
    finishes it as decided (see `registration_fingerprint`); a complete version with the same
    fingerprint means nothing changed, and nothing is logged or registered.

    `bundle_fields` are added to the registered bundle's config.json (a sequence bundle's
    `decoding` defaults); `serving_limits` bound what one request to it may ask for.
    `evaluation_artifacts` (the val predictions) are logged beside the model, under
    `evaluation/`, so a later version can be paired with this one: `compare_with_champion`
    reads the champion's (when it was scored on the same val data) and returns the paired
    difference, which the decision records. The decision is logged to run `run_id`, else the
    active run, else a new run. A registry that refuses a request for good raises
    `RegistryError`.
    """
    if not metric_key.startswith(VALIDATION_PREFIX):
        raise ValueError(
            f"the registry decides on validation metrics only ({VALIDATION_PREFIX}*), got "
            f"'{metric_key}': the test split is reported, never used to choose"
        )
    if metric_key not in metrics:
        raise ValueError(f"metric '{metric_key}' is not among the metrics: {sorted(metrics)}")
    client = MlflowClient()
    with _permanent_errors_named(model_name), _registration_run(run_id):
        existing = _version_by_fingerprint(client, model_name, fingerprint)
        if existing is not None and existing.tags.get(STATE_TAG, COMPLETE) == COMPLETE:
            decision = _unchanged(client, existing, metric_key, evaluation_data)
        else:
            version = existing or _log_and_register(
                bundle_dir,
                tokenizer_path,
                model_name=model_name,
                metrics=metrics,
                bundle_fields=bundle_fields or {},
                serving_limits=serving_limits or ServeParams(),
                evaluation_artifacts=evaluation_artifacts,
                version_tags={
                    **{key: str(value) for key, value in tags.items()},
                    **{f"{METRIC_TAG_PREFIX}{key}": str(value) for key, value in metrics.items()},
                    FINGERPRINT_TAG: fingerprint,
                    EVALUATION_DATA_TAG: evaluation_data,
                    STATE_TAG: PENDING,
                },
            )
            decision = _recorded_decision(version) or _decide(
                client,
                version,
                metric_key=metric_key,
                challenger_metric=float(metrics[metric_key]),
                evaluation_data=evaluation_data,
                margin=champion_margin,
                greater_is_better=greater_is_better,
                compare_with_champion=compare_with_champion,
            )
            _complete(client, decision)
        _log_decision(decision)
    return decision


def _decide(
    client: MlflowClient,
    version: ModelVersion,
    *,
    metric_key: str,
    challenger_metric: float,
    evaluation_data: str,
    margin: float,
    greater_is_better: bool,
    compare_with_champion: Callable[[ModelVersion], dict[str, float] | None] | None,
) -> RegistrationDecision:
    """Compare the new version with the champion and write the decision on the version, before
    any alias moves: a rerun after a crash then carries out this decision, not a new one."""
    champion = _version_by_alias(client, version.name, CHAMPION)
    champion_data = champion.tags.get(EVALUATION_DATA_TAG) if champion else None
    same_data = champion is not None and champion_data == evaluation_data
    champion_metric = _metric_of(champion, metric_key) if same_data else None
    comparison = compare_with_champion(champion) if same_data and compare_with_champion else None
    promoted, reason = _should_promote(
        challenger_metric, champion, champion_metric, same_data, margin, greater_is_better
    )
    decision = RegistrationDecision(
        model_name=version.name,
        version=str(version.version),
        registered=True,
        promoted=promoted,
        champion_version=str(version.version) if promoted else str(champion.version),
        metric_key=metric_key,
        challenger_metric=challenger_metric,
        champion_metric=champion_metric,
        evaluation_data=evaluation_data,
        champion_evaluation_data=champion_data,
        reason=reason,
        champion_comparison=comparison,
    )
    for field, value in asdict(decision).items():
        client.set_model_version_tag(
            version.name, str(version.version), f"{DECISION_TAG_PREFIX}{field}", json.dumps(value)
        )
    return decision


def _recorded_decision(version: ModelVersion) -> RegistrationDecision | None:
    """The decision an interrupted registration wrote on its version, or None if it wrote none
    (or only part of one: then it is decided again, nothing having moved yet)."""
    names = [field.name for field in fields(RegistrationDecision)]
    tags = {name: version.tags.get(f"{DECISION_TAG_PREFIX}{name}") for name in names}
    if any(value is None for value in tags.values()):
        return None
    return RegistrationDecision(**{name: json.loads(value) for name, value in tags.items()})


def _complete(client: MlflowClient, decision: RegistrationDecision) -> None:
    """Move the aliases the decision calls for, then mark the version complete (last)."""
    client.set_registered_model_alias(decision.model_name, CHALLENGER, decision.version)
    if decision.promoted:
        client.set_registered_model_alias(decision.model_name, CHAMPION, decision.version)
    client.set_model_version_tag(decision.model_name, decision.version, STATE_TAG, COMPLETE)


def _unchanged(
    client: MlflowClient, existing: ModelVersion, metric_key: str, evaluation_data: str
) -> RegistrationDecision:
    champion = _version_by_alias(client, existing.name, CHAMPION)
    return RegistrationDecision(
        model_name=existing.name,
        version=str(existing.version),
        registered=False,
        promoted=False,
        champion_version=str(champion.version) if champion else None,
        metric_key=metric_key,
        challenger_metric=_metric_of(existing, metric_key),
        champion_metric=_metric_of(champion, metric_key),
        evaluation_data=evaluation_data,
        champion_evaluation_data=champion.tags.get(EVALUATION_DATA_TAG) if champion else None,
        reason=f"unchanged: version {existing.version} has the same fingerprint",
    )


def _should_promote(
    challenger_metric: float,
    champion: ModelVersion | None,
    champion_metric: float | None,
    same_data: bool,
    margin: float,
    greater_is_better: bool,
) -> tuple[bool, str]:
    if champion is None:
        return True, "first version: no champion yet"
    if not same_data:
        return False, (
            f"not compared: champion version {champion.version} was evaluated on other "
            "validation data (another dataset version, split or profile); versions evaluated "
            "on different data never compete. Move champion by hand if this one should serve: "
            f"tpl promote <version> --model {champion.name}"
        )
    if champion_metric is None:
        # The metric changed since the champion was registered: the two cannot be compared, and
        # keeping a champion no version can ever beat would freeze the registry.
        return True, f"champion version {champion.version} has no recorded metric to compare"
    improvement = challenger_metric - champion_metric
    if not greater_is_better:
        improvement = -improvement
    comparison = f"{challenger_metric:.6g} vs champion v{champion.version} {champion_metric:.6g}"
    if improvement > margin:
        return True, f"beats the champion by more than {margin:g}: {comparison}"
    return False, f"does not beat the champion by more than {margin:g}: {comparison}"


def promote_by_hand(model_name: str, version: str) -> None:
    """Point `champion` at `version` by hand (the registry never promotes across different
    validation data on its own), recording who decided on the version."""
    client = MlflowClient()
    with _permanent_errors_named(model_name):
        client.get_model_version(model_name, version)  # fails clearly if there is no such version
        client.set_registered_model_alias(model_name, CHAMPION, version)
        client.set_model_version_tag(model_name, version, PROMOTED_BY_HAND_TAG, "true")


def _log_and_register(
    bundle_dir: str | Path,
    tokenizer_path: str | Path,
    *,
    model_name: str,
    metrics: Mapping[str, float],
    bundle_fields: Mapping[str, Any],
    serving_limits: ServeParams,
    evaluation_artifacts: Sequence[Path],
    version_tags: dict[str, str],
) -> ModelVersion:
    """Log the pyfunc model to the active run and register it; returns the new version."""
    task = bundle_task(bundle_dir)
    pyfunc_class = PYFUNC_MODELS.get(task)
    if pyfunc_class is None:
        raise ValueError(
            f"no pyfunc model for bundle task '{task}'; supported: {sorted(PYFUNC_MODELS)}"
        )
    with tempfile.TemporaryDirectory(prefix="tpl-register-") as staging:
        # The registered bundle is self-contained: weights, config and tokenizer side by side.
        bundle = Path(staging) / "bundle"
        bundle.mkdir()
        shutil.copyfile(_bundle_file(bundle_dir, WEIGHTS_FILE), bundle / WEIGHTS_FILE)
        config = {**_read_bundle_config(bundle_dir), **bundle_fields}
        (bundle / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(tokenizer_path, bundle / TOKENIZER_FILE)
        (bundle / SERVING_FILE).write_text(serving_limits.model_dump_json(indent=2) + "\n")
        model_code = Path(staging) / "tpl_pyfunc_model.py"
        model_code.write_text(_MODEL_CODE.format(class_name=pyfunc_class.__name__))

        model_info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(model_code),
            artifacts={BUNDLE_ARTIFACT: str(bundle)},
            code_paths=[str(Path(__file__).resolve().parent)],
            signature=pyfunc_class.signature(bundle),
            input_example=pyfunc_class.input_example(),
            pip_requirements=_pip_requirements(),
        )
    mlflow.log_metrics(dict(metrics), model_id=model_info.model_id)
    for artifact in evaluation_artifacts:
        mlflow.log_artifact(str(artifact), artifact_path=EVALUATION_ARTIFACTS)
    return mlflow.register_model(model_info.model_uri, model_name, tags=version_tags)


def _pip_requirements() -> list[str]:
    # Pinned explicitly: MLflow's inference would load the model in a subprocess to find them.
    # Local version labels (torch's "+cpu") are dropped: pip matches them against the base.
    return [
        f"{dist}=={installed_version(dist).split('+')[0]}"
        for dist in ("mlflow", "torch", "tokenizers", "safetensors", "pandas")
    ]


@contextmanager
def _registration_run(run_id: str | None) -> Iterator[None]:
    active = mlflow.active_run()
    if active is not None and run_id in (None, active.info.run_id):
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


@contextmanager
def _permanent_errors_named(model_name: str) -> Iterator[None]:
    """An MLflow error that retrying cannot fix becomes a `RegistryError` saying so."""
    try:
        yield
    except MlflowException as error:
        if error.error_code in TRANSIENT_ERROR_CODES:
            raise
        raise RegistryError(
            f"the model registry refused a request for '{model_name}' ({error.error_code}): "
            f"{error.message}. Retrying will not help: check the tracking URI "
            f"({mlflow.get_tracking_uri()}), the model's versions and aliases, and permissions"
        ) from error


def _log_decision(decision: RegistrationDecision) -> None:
    compared = {"challenger": decision.challenger_metric, "champion": decision.champion_metric}
    mlflow.log_metrics(
        {
            f"{role}_{decision.metric_key}": value
            for role, value in compared.items()
            if value is not None
        }
        | (decision.champion_comparison or {})
    )
    mlflow.set_tags(
        {
            "registry.model_name": decision.model_name,
            "registry.version": decision.version,
            "registry.registered": str(decision.registered).lower(),
            "registry.promoted": str(decision.promoted).lower(),
            "registry.champion_version": decision.champion_version or "",
            "registry.reason": decision.reason,
        }
    )


def evaluation_artifact(version: ModelVersion, name: str, destination: Path) -> Path | None:
    """A file the version was logged with under `evaluation/` (see `register_model`), downloaded
    into `destination`; None when it has none (registered before these were kept)."""
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=version.run_id,
                artifact_path=f"{EVALUATION_ARTIFACTS}/{name}",
                dst_path=str(destination),
            )
        )
    except (MlflowException, OSError):
        return None


def _version_by_alias(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points to; None when the model or the alias does not exist. Read
    from the model's alias map: a lookup of a missing alias answers with an error code that
    differs between MLflow versions and backends."""
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else client.get_model_version(model_name, str(version))


def _version_by_fingerprint(
    client: MlflowClient, model_name: str, fingerprint: str
) -> ModelVersion | None:
    quoted_name = model_name.replace("'", "\\'")
    versions = client.search_model_versions(
        f"name = '{quoted_name}' and tags.{FINGERPRINT_TAG} = '{fingerprint}'"
    )
    return min(versions, key=lambda version: int(version.version), default=None)


def _metric_of(version: ModelVersion | None, metric_key: str) -> float | None:
    if version is None or f"{METRIC_TAG_PREFIX}{metric_key}" not in version.tags:
        return None
    return float(version.tags[f"{METRIC_TAG_PREFIX}{metric_key}"])


# --- loading for prediction -------------------------------------------------------------------


def load_champion(model_name: str, alias: str = CHAMPION) -> mlflow.pyfunc.PyFuncModel:
    """The pyfunc model that `alias` of `model_name` points to (`models:/<name>@<alias>`)."""
    return mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")


def predict_texts(model_name: str, texts: Sequence[str], alias: str = CHAMPION) -> pd.DataFrame:
    """`texts` through the registered model behind `alias`: labels and probabilities, the
    continuations or the translations, a row per text."""
    model = load_champion(model_name, alias)
    return model.predict(pd.DataFrame({TEXT_COLUMN: list(texts)}))
