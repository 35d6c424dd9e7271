"""params.yaml loading: profiles overlay the base, malformed config fails at load naming the key."""

import copy
from pathlib import Path

import pytest
import yaml

from transformer_pl.params import (
    ConfigError,
    changed_keys,
    deep_merge,
    load_params,
    parse_params,
    set_by_profile,
    void_base_edits,
)

PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(PROJECT_PARAMS.read_text())


def test_project_params_load_for_every_profile(raw):
    for profile in ["default", *raw["profiles"]]:
        params = load_params(PROJECT_PARAMS, profile)
        assert params.profile == profile
        assert params.dataset_spec.task in {"classify", "lm", "translate", "tag", "qa", "summarize"}


def test_profile_overlays_only_the_keys_it_names(raw):
    base = parse_params(raw, "default")
    tiny = parse_params(raw, "tiny")
    assert tiny.model.d_model == raw["profiles"]["tiny"]["model"]["d_model"] != base.model.d_model
    # Untouched keys inside an overlaid section keep their base value.
    assert tiny.model.positional == base.model.positional
    assert tiny.finetune.optim.weight_decay == base.finetune.optim.weight_decay


def test_deep_merge_replaces_leaves_and_merges_mappings():
    merged = deep_merge({"a": {"x": 1, "y": 2}, "b": [1, 2]}, {"a": {"y": 3}, "b": [9]})
    assert merged == {"a": {"x": 1, "y": 3}, "b": [9]}


def test_bad_choice_names_key_and_allowed_values(raw):
    raw["model"]["positional"] = "spiral"
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    message = str(error.value)
    assert "model.positional" in message
    assert "'sinusoidal'" in message and "'rope'" in message


def test_unknown_key_is_rejected(raw):
    raw["clean"]["min_char"] = 3  # typo of min_chars
    with pytest.raises(ConfigError, match=r"clean\.min_char: unknown key"):
        parse_params(raw)


def test_out_of_range_value_is_rejected(raw):
    raw["split"]["val_fraction"] = 1.5
    with pytest.raises(ConfigError, match=r"split\.val_fraction"):
        parse_params(raw)


def test_unknown_profile_lists_the_known_ones(raw):
    known = r"allowed: default, .*tiny, tiny-lm, tiny-ner, tiny-qa, tiny-summarize, tiny-translate"
    with pytest.raises(ConfigError, match=known):
        parse_params(raw, "huge")


def test_unknown_dataset_lists_the_defined_ones(raw):
    raw["dataset"] = "mnist"
    with pytest.raises(ConfigError, match=r"dataset 'mnist'.*imdb"):
        parse_params(raw)


def test_heads_must_divide_width(raw):
    raw["model"]["n_heads"] = 3
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        parse_params(raw)


def test_byte_level_vocabulary_must_leave_room_for_merges(raw):
    raw["tokenizer"].update(kind="bpe", vocab_size=200)
    with pytest.raises(ConfigError, match=r"tokenizer.*vocab_size must be > 263 for kind bpe"):
        parse_params(raw)


def test_classification_spec_needs_labels(raw):
    del raw["datasets"]["imdb"]["label_names"]
    with pytest.raises(ConfigError, match=r"datasets\.imdb.*label_names"):
        parse_params(raw)


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(broken)


def test_the_task_decides_pretraining_model_name_and_champion_metric(raw):
    imdb, lm, translate = (
        parse_params(raw, name) for name in ("tiny", "tiny-lm", "tiny-translate")
    )
    assert (imdb.pretrain_objective, imdb.model_name) == ("ppmi_svd", "transformer-pl-imdb")
    assert imdb.registration_metric == ("val_accuracy", True)
    assert lm.dataset_spec.task == "lm" and lm.registration_metric == ("val_word_perplexity", False)
    # A translation model per direction: de→en and en→de scores do not compare.
    assert translate.model_name == "transformer-pl-multi30k-de-en"
    assert translate.registration_metric == ("val_bleu", True)
    raw["datasets"]["multi30k"] |= {"source_language": "en", "target_language": "de"}
    assert parse_params(raw, "tiny-translate").model_name == "transformer-pl-multi30k-en-de"
    # A named metric without a direction is one to maximise.
    raw["register"]["metric"] = "val_chrf"
    assert parse_params(raw, "tiny-translate").registration_metric == ("val_chrf", True)
    # Promotion never decides on test: a test metric is refused at load.
    raw["register"]["metric"] = "test_chrf"
    with pytest.raises(ConfigError, match=r"register\.metric"):
        parse_params(raw, "tiny-translate")


def test_pretraining_follows_the_task_and_a_mismatched_objective_names_the_fit(raw):
    raw["dataset"] = "wikitext-2"
    assert parse_params(raw).pretrain_objective == "clm"  # objective auto
    raw["pretrain"]["objective"] = "mlm"
    with pytest.raises(ConfigError, match=r"pretrain\.objective 'mlm'.*allowed: 'auto', 'clm'"):
        parse_params(raw)
    raw["finetune"]["from_pretrained"] = False  # no pretraining: the objective is moot
    assert parse_params(raw).pretrain_objective is None
    raw["dataset"], raw["finetune"]["from_pretrained"] = "multi30k", True
    raw["pretrain"]["objective"] = "auto"
    assert parse_params(raw).pretrain_objective is None  # a translator is not pretrained
    raw["dataset"] = "imdb"  # a classifier: word vectors, unless a masked-LM encoder is named
    assert parse_params(raw).pretrain_objective == "ppmi_svd"
    raw["pretrain"]["objective"] = "mlm"
    assert parse_params(raw).pretrain_objective == "mlm"
    raw["pretrain"]["objective"] = "ppmi_svd"
    raw["dataset"] = "wikitext-2"
    with pytest.raises(ConfigError, match=r"objective 'ppmi_svd'.*allowed: 'auto', 'clm'"):
        parse_params(raw)
    raw["pretrain"]["objective"] = "auto"
    raw["pretrain"]["embedding_init"] = "ppmi_svd"  # word vectors start only a masked LM
    with pytest.raises(ConfigError, match=r"pretrain\.embedding_init 'ppmi_svd'.*'clm'.*'random'"):
        parse_params(raw)
    raw["dataset"] = "imdb"  # auto: the word vectors are the pretraining, not a start
    with pytest.raises(ConfigError, match=r"embedding_init 'ppmi_svd'.*'ppmi_svd'.*'random'"):
        parse_params(raw)
    raw["pretrain"]["objective"] = "mlm"
    assert parse_params(raw).pretrain.embedding_init == "ppmi_svd"
    raw["finetune"]["from_pretrained"] = False  # nothing is pretrained: the start is moot
    assert parse_params(raw).pretrain_objective is None


def test_each_task_reads_its_own_section_and_a_wrong_key_names_the_task(raw):
    raw["tasks"]["classify"]["pooling"] = "cls"
    assert parse_params(raw, "tiny").task_settings.pooling == "cls"  # IMDB: a classifier
    assert parse_params(raw, "tiny-translate").task_settings.label_smoothing == 0.1
    assert parse_params(raw, "tiny-lm").task_settings.prompts == ["ROMEO:", "First Citizen:"]
    raw["tasks"]["translate"]["pooling"] = "cls"  # a classifier's key in translation's section
    with pytest.raises(ConfigError, match=r"tasks\.translate\.pooling: unknown key"):
        parse_params(raw, "tiny-translate")


def test_a_teacher_needs_a_classifier_and_unlabeled_text(raw):
    teacher = raw["tasks"]["classify"]["teacher"]
    teacher["kind"] = "auto"

    def chosen(params):
        return params.tasks.classify.teacher_for(params.dataset_spec)

    assert chosen(parse_params(raw, "tiny")) == "nb_logistic"  # IMDB has 50k unlabeled reviews
    # Not a classifier: its task's settings have no teacher, and finetune never reads one.
    assert not hasattr(parse_params(raw, "tiny-lm").task_settings, "teacher_for")
    raw["dataset"] = "sst2"
    assert chosen(parse_params(raw)) is None  # no unlabeled split
    teacher["kind"] = "nb_logistic"  # named: it must fit
    with pytest.raises(ConfigError, match=r"'sst2': tasks\.classify\.teacher\.kind 'nb_logistic'"):
        parse_params(raw)
    raw["dataset"] = "imdb"
    teacher["kind"] = "none"
    assert chosen(parse_params(raw, "tiny")) is None
    teacher["kind"] = "bigram"
    with pytest.raises(ConfigError, match=r"teacher\.kind.*'auto'.*'none'.*'nb_logistic'"):
        parse_params(raw)
    for c_grid in ([], [1.0, 0.0]):
        teacher.update(kind="auto", c_grid=c_grid)
        with pytest.raises(ConfigError, match=r"tasks\.classify\.teacher\.c_grid"):
            parse_params(raw)


def test_what_a_model_reads_at_once_must_fit_its_positions(raw):
    raw["profiles"]["tiny-lm"]["encode"]["block_size"] = 1024
    with pytest.raises(ConfigError, match=r"encode\.block_size \(1024\) exceeds model\.max_len"):
        parse_params(raw, "tiny-lm")
    raw["profiles"]["tiny-translate"]["decode"]["max_new_tokens"] = 512
    with pytest.raises(ConfigError, match=r"decode\.max_new_tokens \(512\) must be below"):
        parse_params(raw, "tiny-translate")


def test_batch_sizes_are_global_and_must_divide_over_the_processes(raw):
    raw["trainer"].update(devices=3, num_nodes=2)
    raw["pretrain"]["batch_size"] = 36
    raw["finetune"]["batch_size"] = 32
    with pytest.raises(ConfigError, match=r"finetune\.batch_size \(32\) is the global batch.* 6 "):
        parse_params(raw)
    raw["finetune"]["batch_size"] = 48
    assert parse_params(raw).trainer.world_size == 6
    raw["trainer"]["devices"] = "auto"  # the count is known at launch only
    assert parse_params(raw).trainer.world_size is None


def test_devices_is_a_positive_count_or_auto(raw):
    raw["trainer"]["devices"] = 0
    with pytest.raises(ConfigError, match=r"trainer\.devices.*allowed values: 'auto'"):
        parse_params(raw)


def test_fsdp_needs_cuda(raw):
    raw["trainer"].update(strategy="fsdp", accelerator="cpu")
    with pytest.raises(ConfigError, match=r"trainer: .*'fsdp' needs CUDA GPUs.*use strategy 'ddp'"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": "../elsewhere"}, "climbs out"),
        ({"splits": {"train": "/etc/passwd"}}, "leaves the dataset folder"),
        ({"splits": {"train": "train.csv", "test": "../../secret.csv"}}, "splits.test"),
    ],
)
def test_a_local_dataset_reads_only_inside_its_folder(raw, change, message):
    raw["datasets"]["imdb"] |= change
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_each_dataset_has_its_own_experiment_and_a_bad_template_fails_at_load(raw):
    assert parse_params(raw, "tiny").experiment_name == "transformer-pl-imdb"
    assert parse_params(raw, "tiny-lm").experiment_name.startswith("transformer-pl-")
    raw["tracking"]["experiment_name"] = "team/{task}/{dataset}"
    assert parse_params(raw, "tiny").experiment_name == "team/classify/imdb"
    raw["tracking"]["experiment_name"] = "team/{datset}"
    with pytest.raises(ConfigError, match=r"tracking\.experiment_name: .*\{dataset\}, \{task\}"):
        parse_params(raw, "tiny")


def test_a_base_edit_the_profile_overrides_is_found_void(raw):
    locked = copy.deepcopy({key: raw[key] for key in ("finetune", "profiles", "seed")})
    assert void_base_edits(raw, locked, "tiny") == []
    raw["finetune"]["optim"]["learning_rate"] = 0.005  # tiny sets its own
    raw["finetune"]["optim"]["weight_decay"] = 0.5  # tiny leaves it to the base
    raw["seed"] = 7
    assert void_base_edits(raw, locked, "tiny") == ["finetune.optim.learning_rate"]
    assert void_base_edits(raw, locked, "default") == []  # no overlay: every edit counts
    # Editing the profile's own value is what takes effect.
    raw["profiles"]["tiny"]["finetune"]["optim"]["learning_rate"] = 0.005
    locked["finetune"] = copy.deepcopy(raw["finetune"])
    assert void_base_edits(raw, locked, "tiny") == []


def test_a_profile_sets_a_key_by_naming_it_or_by_replacing_a_section_above_it():
    raw = {"profiles": {"p": {"model": {"d_model": 64}, "tasks": {"grid": [1.0]}}}}
    assert set_by_profile(raw, "p", "model.d_model")
    assert not set_by_profile(raw, "p", "model.n_heads")
    assert set_by_profile(raw, "p", "tasks.grid.0")  # a list is replaced whole
    assert not set_by_profile(raw, "q", "model.d_model")
    assert changed_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "d": 2}}, "x") == [
        "x.a.c",
        "x.a.d",
    ]
