from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from transformer_pl.model import (
    CausalLanguageModel,
    KVCache,
    Seq2SeqTransformer,
    beam_search,
    generate,
    greedy_translate,
    sample_next_token,
)

BOS, EOS, PAD = 1, 2, 0


@pytest.fixture
def lm(make_config) -> CausalLanguageModel:
    torch.manual_seed(0)
    # Larger init than the default 0.02 so the untrained model's choices vary from step to step.
    model = CausalLanguageModel(make_config(positional="rope", tie_embeddings=False))
    for p in model.parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=1.0)
    return model.eval()


def _greedy_by_full_forwards(model: CausalLanguageModel, ids: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        next_token = model(ids).logits[:, -1].argmax(dim=-1)
        ids = torch.cat([ids, next_token[:, None]], dim=1)
    return ids


def test_greedy_equals_argmax_of_repeated_full_forwards(lm: CausalLanguageModel) -> None:
    prompts = torch.randint(3, 32, (3, 5))
    out = generate(lm, prompts, max_new_tokens=8)
    expected = _greedy_by_full_forwards(lm, prompts, 8)
    torch.testing.assert_close(out, expected)
    assert max(len(set(row.tolist())) for row in out[:, 5:]) > 2  # not stuck on one token


def test_left_padded_batch_continues_each_prompt_as_alone(lm: CausalLanguageModel) -> None:
    short, long = torch.randint(3, 32, (1, 3)), torch.randint(3, 32, (1, 6))
    batch = torch.cat([torch.cat([torch.full((1, 3), PAD), short], dim=1), long])
    mask = (torch.arange(6) >= torch.tensor([[3], [0]])).long()
    out = generate(lm, batch, mask, max_new_tokens=6)
    torch.testing.assert_close(out[:1, 3:], generate(lm, short, max_new_tokens=6))
    torch.testing.assert_close(out[1:], generate(lm, long, max_new_tokens=6))


def test_right_padded_prompts_are_rejected(lm: CausalLanguageModel) -> None:
    with pytest.raises(ValueError, match="left"):
        generate(lm, torch.ones(2, 4, dtype=torch.long), torch.tensor([[1, 1, 1, 0], [1] * 4]))


def test_top_k_1_sampling_equals_greedy(lm: CausalLanguageModel) -> None:
    prompts = torch.randint(3, 32, (2, 4))
    sampled = generate(
        lm,
        prompts,
        max_new_tokens=8,
        do_sample=True,
        top_k=1,
        temperature=0.7,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(sampled, generate(lm, prompts, max_new_tokens=8))


def test_sampling_is_reproducible_with_a_generator(lm: CausalLanguageModel) -> None:
    prompts = torch.randint(3, 32, (2, 4))

    def sample(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(lm, prompts, max_new_tokens=10, do_sample=True, generator=gen)

    torch.testing.assert_close(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def _frequencies(logits: torch.Tensor, n: int = 4000, **kwargs: object) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    tokens = sample_next_token(logits.expand(n, -1), generator=gen, **kwargs)  # type: ignore[arg-type]
    return torch.bincount(tokens, minlength=logits.size(-1)).float() / n


def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()[None]
    freq = _frequencies(logits, top_p=0.7)  # 0.5 < 0.7 ≤ 0.5 + 0.3: tokens 0 and 1
    assert freq[2:].sum() == 0 and freq[0] > 0 and freq[1] > 0
    torch.testing.assert_close(freq[0], torch.tensor(0.5 / 0.8), atol=0.03, rtol=0)
    assert _frequencies(logits, top_p=0.5)[0] == 1.0  # token 0 alone reaches 0.5
    assert _frequencies(logits, top_p=1.0)[3] > 0


def test_temperature_rescales_the_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    for temperature in (0.5, 1.0, 2.0):
        expected = (logits[0] / temperature).softmax(-1)
        freq = _frequencies(logits, temperature=temperature)
        torch.testing.assert_close(freq, expected, atol=0.03, rtol=0)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_invalid_sampling_parameters_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(1, 4), **kwargs)


def test_eos_stops_each_row_and_then_the_batch(lm: CausalLanguageModel) -> None:
    prompts = torch.randint(3, 32, (2, 4))
    free = generate(lm, prompts, max_new_tokens=10)[:, 4:]
    eos = free[0, 2].item()
    out = generate(lm, prompts, max_new_tokens=10, eos_token_id=eos)[:, 4:]
    stops = [row.tolist().index(eos) + 1 if eos in row.tolist() else 10 for row in free]
    assert out.size(1) == max(stops)
    for row, stop in enumerate(stops):
        torch.testing.assert_close(out[row, :stop], free[row, :stop])
        assert (out[row, stop:] == lm.config.pad_token_id).all()


def _translator(make_config, std: float) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    model = Seq2SeqTransformer(make_config(vocab_size=6, max_len=16))
    for p in model.parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=std)
    return model.eval()


@pytest.fixture
def translator(make_config) -> Seq2SeqTransformer:
    return _translator(make_config, std=1.0)  # peaked: rows stop at different steps


def test_beam_size_1_equals_greedy_translation(translator: Seq2SeqTransformer) -> None:
    source = torch.randint(3, 6, (3, 5))
    source_mask = torch.ones_like(source)
    source_mask[1, 3:] = 0
    greedy = greedy_translate(translator, source, source_mask, BOS, EOS, max_new_tokens=8)
    beam = beam_search(translator, source, source_mask, BOS, EOS, max_new_tokens=8, beam_size=1)
    torch.testing.assert_close(beam, greedy)
    assert (greedy == EOS).any() and greedy.size(1) > 1  # rows stop at different steps
    # Greedy translation is the argmax of repeated full forwards.
    target = torch.full((3, 1), BOS)
    for _ in range(greedy.size(1)):
        next_token = translator(source, target, source_mask).logits[:, -1].argmax(-1)
        target = torch.cat([target, next_token[:, None]], dim=1)
    for row in range(3):
        n = (greedy[row] != PAD).sum()
        torch.testing.assert_close(greedy[row, :n], target[row, 1 : n + 1])


class _PrefixModel:
    """Stands in for a Seq2SeqTransformer in beam search. Its next-token log-probabilities are an
    arbitrary fixed function of the source and the whole prefix, and it sees the prefix only
    through the cache (one token per step), so a beam search that mis-tracks the cache scores
    the wrong prefixes."""

    def __init__(self, V: int) -> None:
        self.V = V
        self.config = make_tiny_config_namespace()

    def log_probs(self, source: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """(B, S) source, (B, T) prefix -> (B, V)."""
        h = (source.double() * 0.37).sum(-1, keepdim=True) + (
            prefix.double() * 1.9 ** torch.arange(prefix.size(1))
        ).sum(-1, keepdim=True)
        logits = 3 * torch.sin(h * torch.arange(1, self.V + 1) + torch.arange(self.V))
        logits[:, EOS] -= 2.0  # fewer early stops, so later steps, which need the cache, count
        return logits.log_softmax(-1)

    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
        return source_ids[..., None].float()

    def decode(self, target_ids, memory, memory_mask=None, target_mask=None, cache=None):
        if not cache.self_attn:
            cache.self_attn = [KVCache()]
        step = target_ids[:, None, :, None].float()  # (B, 1, 1, 1), stored like keys
        prefix, _ = cache.self_attn[0].append(step, step)
        source = memory[..., 0].long()
        return self.log_probs(source, prefix[:, 0, :, 0].long())[:, None]


def make_tiny_config_namespace() -> SimpleNamespace:
    return SimpleNamespace(max_len=16, pad_token_id=PAD)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_exhaustive_beam_finds_the_best_hypothesis(length_penalty: float) -> None:
    """With beam_size = V^n every hypothesis stays in the beam: compare with brute force."""
    V, n = 5, 3
    model = _PrefixModel(V)
    sources = torch.randint(0, V, (8, 2), generator=torch.Generator().manual_seed(0))
    found = beam_search(
        model,  # type: ignore[arg-type]
        sources,
        None,
        BOS,
        EOS,
        max_new_tokens=n,
        beam_size=V**n,
        length_penalty=length_penalty,
    )
    for source, result in zip(sources, found, strict=True):
        best_score, best = float("-inf"), None
        for tokens in itertools.product(range(V), repeat=n):
            length = tokens.index(EOS) + 1 if EOS in tokens else n
            if any(t != PAD for t in tokens[length:]):
                continue  # a hypothesis ends at EOS; count it once
            prefix = [BOS, *tokens[:length]]
            score = sum(
                model.log_probs(source[None], torch.tensor([prefix[: t + 1]]))[0, prefix[t + 1]]
                for t in range(length)
            )
            score = float(score) / length**length_penalty
            if score > best_score:
                best_score, best = score, list(tokens)
        assert result.tolist() + [PAD] * (n - len(result)) == best
