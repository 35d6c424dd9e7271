"""Typed pipeline parameters: `params.yaml` + a named profile overlay, validated at load.

Every tunable lives in one section per stage (stage_sections.py) or per task
(tasks/<task>/settings.py). A malformed file fails here — before any stage runs — with the dotted
key and, for choices, the allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from transformer_pl.section import Section
from transformer_pl.stage_sections import (
    CleanParams,
    DecodeParams,
    EncodeParams,
    EvaluateParams,
    FinetuneParams,
    ModelParams,
    PretrainingObjective,
    PretrainParams,
    RegisterParams,
    ScheduleParams,
    ServeParams,
    SplitParams,
    TokenizerParams,
    TrackingParams,
    TrainerParams,
    ValidateParams,
)
from transformer_pl.tasks.settings import DatasetSpec, TaskSettings, TasksParams

DEFAULT_PARAMS_FILE = Path("params.yaml")
DEFAULT_PROFILE = "default"
MISSING_VALUE = object()  # a key one params tree has and the other lacks
PROFILE_VARIABLE = "TPL_PROFILE"  # the profile a command uses when not given --profile


class ConfigError(ValueError):
    """A params file that cannot be used; the message names every offending key."""


class Params(Section):
    seed: int = 42
    profile: str = DEFAULT_PROFILE
    dataset: str = "imdb"
    datasets: dict[str, DatasetSpec]  # no default: params.yaml holds the built-in specs
    clean: CleanParams = CleanParams()
    # `validate` and `register` would shadow pydantic/ABC methods: stored under an alias.
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    tokenizer: TokenizerParams = TokenizerParams()
    encode: EncodeParams = EncodeParams()
    model: ModelParams = ModelParams()
    trainer: TrainerParams = TrainerParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    decode: DecodeParams = DecodeParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")
    serve: ServeParams = ServeParams()
    tasks: TasksParams = TasksParams()
    tracking: TrackingParams = TrackingParams()
    schedule: ScheduleParams = ScheduleParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _dataset_known(self) -> Params:
        if self.dataset not in self.datasets:
            allowed = ", ".join(sorted(self.datasets)) or "(none defined)"
            raise ValueError(
                f"dataset '{self.dataset}' is not defined under 'datasets'; allowed: {allowed}"
            )
        return self

    @model_validator(mode="after")
    def _fits_the_task(self) -> Params:
        task = self.dataset_spec.task
        fitting = self.task_settings.pretraining_objectives
        pretraining_asked = self.pretrain.enabled and self.finetune.from_pretrained
        if pretraining_asked and self.pretrain.objective not in ("auto", *fitting):
            allowed = ", ".join(repr(value) for value in ("auto", *fitting))
            raise ValueError(
                f"pretrain.objective '{self.pretrain.objective}' does not fit dataset "
                f"'{self.dataset}' (task '{task}'); allowed: {allowed} "
                "(or finetune.from_pretrained: false to train from scratch)"
            )
        objective = self.pretrain_objective
        if self.pretrain.embedding_init != "random" and objective not in (None, "mlm"):
            raise ValueError(
                f"pretrain.embedding_init '{self.pretrain.embedding_init}' starts a masked LM "
                f"(objective 'mlm', classification datasets) from word vectors; here the "
                f"objective is '{objective}' (dataset '{self.dataset}', task '{task}'): set it "
                "to 'random'"
            )
        problem = self.task_settings.dataset_problem(self.dataset_spec)
        if problem is not None:
            raise ValueError(f"dataset '{self.dataset}': {problem}")
        # Positions beyond max_len have no encoding: what a model reads at once must fit.
        key = self.task_settings.input_length_key
        longest = getattr(self.encode, key.removeprefix("encode."))
        if longest > self.model.max_len:
            raise ValueError(f"{key} ({longest}) exceeds model.max_len ({self.model.max_len})")
        if self.task_settings.decodes and self.decode.max_new_tokens >= self.model.max_len:
            raise ValueError(
                f"decode.max_new_tokens ({self.decode.max_new_tokens}) must be below "
                f"model.max_len ({self.model.max_len})"
            )
        return self

    @model_validator(mode="after")
    def _batches_divide_over_processes(self) -> Params:
        processes = self.trainer.world_size
        for key, size in (
            ("pretrain.batch_size", self.pretrain.batch_size),
            ("finetune.batch_size", self.finetune.batch_size),
        ):
            if processes and size % processes:
                raise ValueError(
                    f"{key} ({size}) is the global batch: it must divide evenly over the "
                    f"{processes} processes of trainer.devices × trainer.num_nodes"
                )
        return self

    @property
    def dataset_spec(self) -> DatasetSpec:
        return self.datasets[self.dataset]

    @property
    def task_settings(self) -> TaskSettings:
        """The `tasks.<task>` section of the dataset's task."""
        return getattr(self.tasks, self.dataset_spec.task)

    @property
    def pretrain_objective(self) -> PretrainingObjective | None:
        """The objective the pretrain stage trains with; None when it trains nothing."""
        fitting = self.task_settings.pretraining_objectives
        if not (self.pretrain.enabled and self.finetune.from_pretrained and fitting):
            return None
        objective = fitting[0] if self.pretrain.objective == "auto" else self.pretrain.objective
        return objective  # type: ignore[return-value]  # one of PretrainingObjective

    @property
    def model_name(self) -> str:
        if self.register_.model_name:
            return self.register_.model_name
        spec = self.dataset_spec
        return f"transformer-pl-{self.dataset}{spec.model_name_suffix}"

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment of this dataset's runs (`tracking.experiment_name` filled in)."""
        return self.tracking.experiment_name.format(
            dataset=self.dataset, task=self.dataset_spec.task
        )

    @property
    def registration_metric(self) -> tuple[str, bool]:
        """(metric key, greater is better) that decides champion promotion."""
        headline, headline_greater = self.task_settings.headline_metric
        metric = self.register_.metric or headline
        default_greater = headline_greater if metric == headline else True
        greater = self.register_.greater_is_better
        return metric, default_greater if greater is None else greater


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay wins; nested mappings merge key by key, anything else is replaced whole."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_raw(raw: Mapping[str, Any], profile: str | None = None) -> dict[str, Any]:
    """Apply the named profile overlay (from the file's `profiles` section) to the base params."""
    profiles = raw.get("profiles") or {}
    base = {key: value for key, value in raw.items() if key != "profiles"}
    chosen = profile or base.get("profile") or DEFAULT_PROFILE
    if chosen != DEFAULT_PROFILE and chosen not in profiles:
        allowed = ", ".join([DEFAULT_PROFILE, *sorted(profiles)])
        raise ConfigError(f"profile: unknown profile '{chosen}'; allowed: {allowed}")
    resolved = deep_merge(base, profiles.get(chosen) or {})
    resolved["profile"] = chosen
    return resolved


def changed_keys(before: Any, after: Any, prefix: str) -> list[str]:
    """The dotted keys under `prefix` whose values differ between two params trees."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        return [
            changed
            for key in sorted(before.keys() | after.keys(), key=str)
            for changed in changed_keys(
                before.get(key, MISSING_VALUE), after.get(key, MISSING_VALUE), f"{prefix}.{key}"
            )
        ]
    return [] if before == after else [prefix]


def set_by_profile(raw: Mapping[str, Any], profile: str, key: str) -> bool:
    """Whether the profile's overlay decides the dotted `key` (it sets the key, or replaces a
    section above it whole), so that the base value at `key` is not used."""
    value: Any = (raw.get("profiles") or {}).get(profile) or {}
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return True
        if part not in value:
            return False
        value = value[part]
    return True


def void_base_edits(raw: Mapping[str, Any], locked: Mapping[str, Any], profile: str) -> list[str]:
    """Base keys of params.yaml changed since `locked` (a stage's params as DVC last recorded
    them) that the active profile sets itself: edits (`dvc exp run -S key=...`) that would
    change nothing."""
    edited = [
        changed
        for key, before in locked.items()
        if key not in ("profile", "profiles")
        for changed in changed_keys(before, _dotted_value(raw, key), key)
    ]
    return [key for key in edited if set_by_profile(raw, profile, key)]


def _dotted_value(raw: Mapping[str, Any], key: str) -> Any:
    value: Any = raw
    for part in key.split("."):
        value = value.get(part, MISSING_VALUE) if isinstance(value, Mapping) else MISSING_VALUE
    return value


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "literal_error":
            allowed = item.get("ctx", {}).get("expected", "")
            message = f"got {item['input']!r}; allowed values: {allowed}"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against params.yaml)"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def parse_params(
    raw: Mapping[str, Any], profile: str | None = None, source: str = "params"
) -> Params:
    try:
        return Params.model_validate(resolve_raw(raw, profile))
    except ValidationError as error:
        raise ConfigError(f"invalid parameters in {source}:\n{_describe(error)}") from None


def load_params(
    path: str | Path | None = None, profile: str | None = None, *, profile_from_env: bool = True
) -> Params:
    """Load params.yaml (or `path`), overlay `profile` (else $TPL_PROFILE, unless
    `profile_from_env` is False, else the file's own)."""
    path = Path(path or os.environ.get("TPL_PARAMS") or DEFAULT_PARAMS_FILE)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    from_env = os.environ.get(PROFILE_VARIABLE) if profile_from_env else None
    return parse_params(raw, profile or from_env, source=str(path))
