"""params.yaml's sections, one per stage (and the trainer's, the model's, the served model's):
what each stage may be told, with its default and allowed values."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from transformer_pl.section import Section

# --- data -------------------------------------------------------------------------------------


class CleanParams(Section):
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFKC"
    strip_html: bool = True
    lowercase: bool = False
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(100_000, gt=0)
    # Translation: pairs whose longer side has more than this many times the characters of the
    # shorter side are misaligned or truncated.
    max_length_ratio: float = Field(3.0, ge=1)
    # Examples (classification, translation) only: in a language-model corpus repeated lines
    # (headings, speaker names) are structure, not duplicates.
    deduplicate: bool = True
    drop_leakage: bool = True  # training rows whose text also appears in val/test
    # A seeded sample per split, drawn before any cleaning decision (stratified by raw label;
    # a contiguous window for language-model corpora).
    max_rows_per_split: int | None = Field(None, gt=0)


class ValidateParams(Section):
    min_rows_per_split: int = Field(100, ge=0)
    # Language-model corpora: a split of a few long lines can pass the row count and still be
    # too little text to measure a perplexity on.
    min_words_per_split: int = Field(0, ge=0)
    max_quarantine_fraction: float = Field(0.05, ge=0, le=1)
    min_class_fraction: float = Field(0.1, ge=0, le=1)  # the rarest class's share of a split


class SplitParams(Section):
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)  # only where the source has no test split
    stratify: bool = True


BYTE_LEVEL_BASE_VOCABULARY = 256 + 7  # bytes + data.tokenizer.SPECIAL_TOKENS


class TokenizerParams(Section):
    kind: Literal["bpe", "wordpiece"] = "bpe"
    vocab_size: int = Field(16_000, ge=100)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = True
    use_unlabeled: bool = True  # train on unlabeled text too, where the dataset has it

    @model_validator(mode="after")
    def _room_for_merges(self) -> TokenizerParams:
        # Byte-level BPE starts from all 256 bytes (+ the special tokens): a smaller vocabulary
        # would silently come out larger than asked.
        if self.kind == "bpe" and self.vocab_size <= BYTE_LEVEL_BASE_VOCABULARY:
            raise ValueError(
                f"vocab_size must be > {BYTE_LEVEL_BASE_VOCABULARY} for kind bpe "
                f"(256 bytes + special tokens), got {self.vocab_size}"
            )
        return self


class EncodeParams(Section):
    max_length: int = Field(512, ge=8)  # classification / translation sequence cap
    block_size: int = Field(128, ge=8)  # packed language-model blocks
    # Encoder–decoder sources longer than max_length lose their end, or their start.
    truncate_from: Literal["end", "start"] = "end"
    # QA: tokens two consecutive windows of one long context share, and the question's cap.
    stride: int = Field(128, ge=0)
    max_question_tokens: int = Field(64, gt=0)
    num_proc: int = Field(1, ge=1)


# --- model and training -----------------------------------------------------------------------


class ModelParams(Section):
    d_model: int = Field(256, gt=0)
    n_heads: int = Field(4, gt=0)
    n_layers: int = Field(2, gt=0)
    n_decoder_layers: int | None = Field(None, gt=0)
    d_ff: int = Field(1024, gt=0)
    max_len: int = Field(512, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    positional: Literal["sinusoidal", "learned", "rope"] = "sinusoidal"
    norm_first: bool = True
    activation: Literal["gelu", "relu"] = "gelu"
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelParams:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        return self


class TrainerParams(Section):
    """How the training stages run. More than one process (devices × num_nodes) trains with DDP
    or FSDP: each process runs `tpl stage <name>` under a launcher (torchrun, srun), and a
    pipeline flow starts torchrun itself for one machine's processes (pipelines/flows.py)."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    # Processes per node: a count, or "auto" (every visible CUDA GPU; one process otherwise).
    devices: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    # "auto": bf16-mixed on GPUs and CPUs with bf16 instructions, else 16-mixed (GPU) / 32-true.
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "auto"
    deterministic: bool = False
    compile: bool = False
    log_every_n_steps: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fsdp_on_cuda(self) -> TrainerParams:
        if self.strategy == "fsdp" and self.accelerator in ("cpu", "mps"):
            raise ValueError(
                f"strategy 'fsdp' needs CUDA GPUs (accelerator 'auto', 'gpu' or 'cuda', not "
                f"'{self.accelerator}'); on CPU use strategy 'ddp'"
            )
        return self

    @property
    def world_size(self) -> int | None:
        """Processes in all, when `devices` is a count (None for "auto": known at launch)."""
        return None if self.devices == "auto" else self.devices * self.num_nodes


class OptimParams(Section):
    """finetune.optim, and the optimiser of a task built without one."""

    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_fraction: float = Field(0.06, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    gradient_clip: float | None = Field(1.0, gt=0)
    accumulate_grad_batches: int = Field(1, ge=1)


class PretrainOptimParams(OptimParams):
    """pretrain.optim: a language model trained from scratch takes a higher peak learning rate
    than a finetune that starts from it. Its own class, so that a pretrain.optim section that
    omits learning_rate gets this default, not finetune's."""

    learning_rate: float = Field(2e-3, gt=0)


PretrainingObjective = Literal["mlm", "clm", "ppmi_svd"]


class PretrainParams(Section):
    enabled: bool = True
    # "auto": the first of the task's pretraining_objectives (tasks/<task>/settings.py); naming
    # one checks that it fits.
    objective: Literal["auto", "mlm", "clm", "ppmi_svd"] = "auto"
    mask_probability: float = Field(0.4, gt=0, lt=1)
    # mlm (a classifier's pretraining): the token embedding starts random or from the word
    # vectors of ppmi_svd, computed first from the same text.
    embedding_init: Literal["random", "ppmi_svd"] = "random"
    cooccurrence_window: int = Field(5, ge=1)  # ppmi_svd: tokens counted on each side
    batch_size: int = Field(32, ge=1)  # global: each of N processes takes 1/N of it
    max_steps: int = Field(2000, ge=1)
    val_check_interval: int = Field(250, ge=1)
    limit_val_batches: int = Field(50, ge=1)
    optim: PretrainOptimParams = PretrainOptimParams()


class FinetuneParams(Section):
    from_pretrained: bool = True
    batch_size: int = Field(32, ge=1)  # global: each of N processes takes 1/N of it
    max_epochs: int = Field(1, ge=1)
    max_steps: int = -1
    early_stopping_patience: int = Field(3, ge=1)
    optim: OptimParams = OptimParams()


class EvaluateParams(Section):
    batch_size: int = Field(64, ge=1)
    latency_examples: int = Field(64, ge=1)
    # Resamples of the paired bootstrap interval of each model-minus-baseline difference.
    bootstrap_resamples: int = Field(1000, ge=10)
    samples: int = Field(5, ge=0)  # test examples shown with the model's output (samples.json)
    length_buckets: int = Field(4, ge=1)  # test slices by input length (quantiles of words)


class DecodeParams(Section):
    """How language models and translators decode: evaluate scores with these settings and the
    registered model serves with them unless a request overrides them."""

    max_new_tokens: int = Field(64, ge=1)
    stop_at_eos: bool = True  # language models: a continuation ends with its line
    do_sample: bool = False  # language models: sample instead of taking the most likely token
    temperature: float = Field(1.0, gt=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None  # sampling; None: a fresh draw on every call
    beam_size: int = Field(4, ge=1)  # translation, summarization; 1 is greedy decoding
    length_penalty: float = Field(0.6, ge=0)  # beam search: score / length^length_penalty
    # Encoder–decoder outputs: no EOS before this many tokens; no n-gram of this size twice
    # (0: off).
    min_new_tokens: int = Field(0, ge=0)
    no_repeat_ngram_size: int = Field(0, ge=0)


class RegisterParams(Section):
    # Default: transformer-pl-<dataset>, plus -<source>-<target> for translation (a model per
    # direction: their scores do not compare).
    model_name: str | None = None
    # A validation metric of evaluate (val_*); default: the task's headline_metric
    # (tasks/<task>/settings.py).
    metric: str | None = None
    greater_is_better: bool | None = None  # default: the headline metric's direction, else True
    champion_margin: float = Field(0.0, ge=0)

    @field_validator("metric")
    @classmethod
    def _a_validation_metric(cls, metric: str | None) -> str | None:
        if metric is not None and not metric.startswith("val_"):
            raise ValueError(
                f"'{metric}' is not a validation metric: promotion decides on val_* metrics "
                "only (the test split is reported, never used to choose), e.g. val_accuracy"
            )
        return metric


class ServeParams(Section):
    """What one request to a registered model may ask for; beyond it the request is refused
    with a 400 naming the limit (registered with the model, read by the served pyfunc), or a
    413 for the body's bytes (read by `tpl serve`'s server before the model sees the request)."""

    max_request_bytes: int = Field(16_000_000, ge=1)  # request body (`tpl serve`: a 413)
    max_rows: int = Field(256, ge=1)  # texts per request
    max_text_chars: int = Field(50_000, ge=1)  # characters per text
    max_new_tokens: int = Field(512, ge=1)  # generation and translation
    max_beam_size: int = Field(8, ge=1)  # translation


EXPERIMENT_NAME_FIELDS = ("dataset", "task")  # what `tracking.experiment_name` may name


class TrackingParams(Section):
    # One experiment per dataset: its runs share one task and one set of metrics to compare.
    experiment_name: str = "transformer-pl-{dataset}"

    @field_validator("experiment_name")
    @classmethod
    def _known_fields(cls, name: str) -> str:
        try:
            name.format(**dict.fromkeys(EXPERIMENT_NAME_FIELDS, ""))
        except (KeyError, IndexError, ValueError) as error:
            allowed = ", ".join(f"{{{field}}}" for field in EXPERIMENT_NAME_FIELDS)
            raise ValueError(
                f"'{name}' is not a name template ({error!r}); it may name {allowed}"
            ) from None
        return name


class ScheduleParams(Section):
    cron: str = "0 3 * * *"  # `tpl deploy`'s default schedule for the whole pipeline
