"""Text in, text out for the decoder models, on tiny random models and the pipeline's own
tokenizer: bundles load, every corpus token is scored once, batching and padding change no
output, beam size 1 is greedy, and the pyfunc models serve what the functions return."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from transformer_pl.data.tokenizer import EOS_ID, train_tokenizer
from transformer_pl.model import (
    CausalLanguageModel,
    LMOutput,
    Seq2SeqTransformer,
    TransformerConfig,
)
from transformer_pl.params import DecodeParams, TokenizerParams
from transformer_pl.serving import BUNDLE_ARTIFACT
from transformer_pl.tasks.lm.module import CausalLMModule
from transformer_pl.tasks.lm.predict import (
    TransformerGeneratorModel,
    corpus_nll,
    generate_texts,
    line_stream,
    load_lm_bundle,
)
from transformer_pl.tasks.sequence import SequenceBundleConfig
from transformer_pl.tasks.translate.module import TranslatorModule
from transformer_pl.tasks.translate.predict import TransformerTranslatorModel, translate_texts

SENTENCES = [
    "Zwei Hunde spielen im Schnee.",
    "Two dogs play in the snow.",
    "A man is riding a red bicycle down the street.",
    "Ein Mann fährt mit einem roten Fahrrad die Straße hinunter.",
    "The cat sleeps on the warm windowsill .",
]
PROMPTS = ["The", "A man is riding", "Two dogs play in the snow and then they run to the"]
GREEDY = DecodeParams(max_new_tokens=6, stop_at_eos=False)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = TokenizerParams(kind="bpe", vocab_size=300, min_frequency=1, lowercase=False)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_tokenizer(SENTENCES * 3, params).save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_path))


def tiny_config(tokenizer: Tokenizer) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=32,
        n_heads=2,
        n_layers=2,
        d_ff=64,
        max_len=48,
        dropout=0.0,
    )


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Larger random weights than the N(0, 0.02²) initialisation, so that the next-token
    distribution is far from uniform and decoding choices depend on the context."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter.normal_(std=0.3)
    return model.eval()


@pytest.fixture(scope="module")
def language_model(tokenizer: Tokenizer) -> CausalLanguageModel:
    return randomised(CausalLanguageModel(tiny_config(tokenizer)))


@pytest.fixture(scope="module")
def translator(tokenizer: Tokenizer) -> Seq2SeqTransformer:
    return randomised(Seq2SeqTransformer(tiny_config(tokenizer)))


def export_bundle(
    task: CausalLMModule | TranslatorModule,
    model: torch.nn.Module,
    directory: Path,
    **fields: object,
) -> Path:
    """A bundle as finetune exports it (plus the tokenizer, as registration adds it)."""
    task.model.load_state_dict(model.state_dict())
    task.export_weights(directory, **fields)
    return directory


# --- language models --------------------------------------------------------------------------


def test_line_stream_is_each_line_then_eos_after_a_leading_eos(tokenizer: Tokenizer) -> None:
    stream = line_stream(tokenizer, ["Two dogs", "A man"])
    first = tokenizer.encode("Two dogs", add_special_tokens=False).ids
    second = tokenizer.encode("A man", add_special_tokens=False).ids
    assert stream.tolist() == [EOS_ID, *first, EOS_ID, *second, EOS_ID]


@pytest.mark.parametrize("block_size", [4, 7, 40])
def test_corpus_nll_scores_every_token_once(
    language_model: CausalLanguageModel, tokenizer: Tokenizer, block_size: int
) -> None:
    stream = line_stream(tokenizer, SENTENCES)
    expected = 0.0
    # Windows overlap by one id: each predicts its ids after the first, from its own ids only.
    for start in range(0, len(stream) - 1, block_size):
        window = torch.from_numpy(stream[start : start + block_size + 1])[None]
        with torch.no_grad():
            logits = language_model(window[:, :-1]).logits[0]
        expected += float(F.cross_entropy(logits, window[0, 1:], reduction="sum"))
    total = corpus_nll(language_model, stream, block_size, batch_size=3)
    assert total == pytest.approx(expected, rel=1e-5)
    assert total > 0


def test_generation_is_the_same_batched_and_alone(
    language_model: CausalLanguageModel, tokenizer: Tokenizer
) -> None:
    batched = generate_texts(language_model, tokenizer, PROMPTS, GREEDY, batch_size=3)
    alone = [generate_texts(language_model, tokenizer, [prompt], GREEDY)[0] for prompt in PROMPTS]
    assert batched == alone
    assert all(continuation for continuation in batched)


class EndsEveryThirdToken(CausalLanguageModel):
    """Makes [EOS] the choice at every third decoding step."""

    steps = 0

    def forward(self, *args: object, **kwargs: object) -> LMOutput:
        output = super().forward(*args, **kwargs)
        self.steps += 1
        if self.steps % 3 == 0:
            output.logits[..., EOS_ID] += 1e4
        return output


def test_generation_stops_at_the_end_of_the_line(
    language_model: CausalLanguageModel, tokenizer: Tokenizer
) -> None:
    ends_lines = EndsEveryThirdToken(language_model.config)
    ends_lines.load_state_dict(language_model.state_dict())
    ends_lines.eval()
    running_on = generate_texts(ends_lines, tokenizer, PROMPTS, GREEDY)
    ends_lines.steps = 0
    stopped = generate_texts(
        ends_lines, tokenizer, PROMPTS, GREEDY.model_copy(update={"stop_at_eos": True})
    )
    # Steps 3 and 6 end lines: two tokens, a line break, two tokens (the last line ended).
    assert all(text.count("\n") == 1 for text in running_on), running_on
    for long, short in zip(running_on, stopped, strict=True):
        assert "\n" not in short
        assert long.split("\n")[0] == short  # the same line, ended where the model ended it


def test_sampling_with_a_seed_repeats_and_differs_from_greedy(
    language_model: CausalLanguageModel, tokenizer: Tokenizer
) -> None:
    sampling = GREEDY.model_copy(update={"do_sample": True, "seed": 7, "max_new_tokens": 12})
    first = generate_texts(language_model, tokenizer, PROMPTS, sampling)
    assert generate_texts(language_model, tokenizer, PROMPTS, sampling) == first
    greedy = generate_texts(
        language_model, tokenizer, PROMPTS, sampling.model_copy(update={"do_sample": False})
    )
    assert first != greedy


def test_a_long_prompt_keeps_its_last_tokens(
    language_model: CausalLanguageModel, tokenizer: Tokenizer
) -> None:
    long_prompt = " ".join(SENTENCES * 4)  # far more tokens than max_len
    (continuation,) = generate_texts(language_model, tokenizer, [long_prompt], GREEDY)
    assert continuation
    too_many = GREEDY.model_copy(update={"max_new_tokens": language_model.config.max_len})
    with pytest.raises(ValueError, match="no room for a prompt"):
        generate_texts(language_model, tokenizer, ["The"], too_many)


# --- translation ------------------------------------------------------------------------------


def test_translation_is_the_same_batched_in_any_order_and_alone(
    translator: Seq2SeqTransformer, tokenizer: Tokenizer
) -> None:
    beam = DecodeParams(max_new_tokens=8, beam_size=3)
    batched = translate_texts(translator, tokenizer, SENTENCES, beam, max_length=32, batch_size=2)
    alone = [translate_texts(translator, tokenizer, [text], beam, 32)[0] for text in SENTENCES]
    assert batched == alone
    assert len(batched) == len(SENTENCES) and all(isinstance(text, str) for text in batched)


def test_beam_size_one_is_greedy_and_sources_are_cut_to_max_length(
    translator: Seq2SeqTransformer, tokenizer: Tokenizer
) -> None:
    greedy = DecodeParams(max_new_tokens=8, beam_size=1)
    short_cut = translate_texts(translator, tokenizer, SENTENCES[2:3], greedy, max_length=3)
    first_words = tokenizer.decode(tokenizer.encode(SENTENCES[2], add_special_tokens=False).ids[:3])
    assert short_cut == translate_texts(translator, tokenizer, [first_words], greedy, 32)
    assert translate_texts(translator, tokenizer, [""], greedy, 32) != []  # empty source works


# --- bundles and the pyfunc models ------------------------------------------------------------


def test_sequence_bundles_round_trip_with_decoding_defaults(
    language_model: CausalLanguageModel, tokenizer_path: Path, tmp_path: Path
) -> None:
    task = CausalLMModule(language_model.config)
    directory = export_bundle(task, language_model, tmp_path / "lm", max_length=16)
    model, tokenizer, config = load_lm_bundle(directory, tokenizer_path)
    assert config == SequenceBundleConfig(task="lm", model=language_model.config, max_length=16)
    assert config.decoding == DecodeParams()
    ids = torch.tensor([tokenizer.encode("The cat", add_special_tokens=False).ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, language_model(ids).logits)
    with pytest.raises(ValueError, match="max_length"):
        SequenceBundleConfig.from_dict(
            {"task": "lm", "model": config.model.to_dict(), "max_length": 99}
        )


def _served(pyfunc_class: type, directory: Path, tokenizer_path: Path) -> object:
    """The pyfunc model as MLflow builds it: its bundle artifact holds the tokenizer too."""
    (directory / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    served = pyfunc_class()
    served.load_context(SimpleNamespace(artifacts={BUNDLE_ARTIFACT: str(directory)}))
    return served


def test_generator_pyfunc_continues_prompts_with_request_params(
    language_model: CausalLanguageModel, tokenizer: Tokenizer, tokenizer_path: Path, tmp_path: Path
) -> None:
    directory = export_bundle(
        CausalLMModule(language_model.config),
        language_model,
        tmp_path / "lm",
        max_length=16,
        decoding=GREEDY.model_dump(),
    )
    served = _served(TransformerGeneratorModel, directory, tokenizer_path)
    frame = pd.DataFrame({"text": PROMPTS})

    output = served.predict(None, frame)
    assert list(output.columns) == ["continuation"]
    assert output["continuation"].tolist() == generate_texts(
        language_model, tokenizer, PROMPTS, GREEDY
    )
    shorter = served.predict(None, frame, params={"max_new_tokens": 1})
    for short, full in zip(shorter["continuation"], output["continuation"], strict=True):
        assert full.startswith(short) and len(short) < len(full)
    with pytest.raises(ValueError, match="temperature"):
        served.predict(None, frame, params={"do_sample": True, "temperature": 0})
    signature = TransformerGeneratorModel.signature(directory)
    assert {param.name: param.default for param in signature.params.params}["max_new_tokens"] == 6


def test_translator_pyfunc_translates_sentences(
    translator: Seq2SeqTransformer, tokenizer: Tokenizer, tokenizer_path: Path, tmp_path: Path
) -> None:
    decoding = DecodeParams(max_new_tokens=8, beam_size=2)
    directory = export_bundle(
        TranslatorModule(translator.config),
        translator,
        tmp_path / "translate",
        max_length=32,
        source_language="de",
        target_language="en",
        decoding=decoding.model_dump(),
    )
    served = _served(TransformerTranslatorModel, directory, tokenizer_path)

    output = served.predict(None, pd.DataFrame({"text": SENTENCES}))
    assert list(output.columns) == ["translation"]
    assert output["translation"].tolist() == translate_texts(
        translator, tokenizer, SENTENCES, decoding, 32
    )
    greedy = served.predict(None, pd.DataFrame({"text": SENTENCES}), params={"beam_size": 1})
    assert greedy["translation"].tolist() == translate_texts(
        translator, tokenizer, SENTENCES, decoding.model_copy(update={"beam_size": 1}), 32
    )


def test_random_model_perplexity_is_near_the_vocabulary(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    # At the N(0, 0.02²) initialisation the next-token distribution is nearly uniform.
    torch.manual_seed(0)
    model = CausalLanguageModel(tiny_config(tokenizer)).eval()
    stream = line_stream(tokenizer, SENTENCES)
    perplexity = math.exp(corpus_nll(model, stream, 16) / (len(stream) - 1))
    assert perplexity == pytest.approx(tokenizer.get_vocab_size(), rel=0.1)
