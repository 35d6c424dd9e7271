"""Decoding with the KV cache: sampling/greedy for the causal LM, greedy and beam search for
sequence-to-sequence. Call `model.eval()` first; these functions leave the mode alone."""

from __future__ import annotations

import torch
from torch import Tensor

from transformer_pl.model.heads import CausalLanguageModel, Seq2SeqTransformer
from transformer_pl.model.transformer import DecoderCache


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row of logits (B, V) from softmax(logits / temperature), restricted to
    the top_k most likely tokens and then to the nucleus: the smallest set of most likely tokens
    whose probability reaches top_p (Holtzman et al., 2020). Returns (B,)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    logits = logits.float() / temperature
    if top_k is not None:
        kth_largest = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the more likely tokens before it already reach top_p; the most
        # likely token always stays.
        outside = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(outside, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


def constrain_next(
    log_probs: Tensor,
    tokens: Tensor,
    step: int,
    eos_token_id: int,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
) -> Tensor:
    """`log_probs` (N, V) of the next token after each row of `tokens` (N, T, the generated
    tokens so far, `step` of them), with what may not come next at -inf: EOS before
    `min_new_tokens` tokens, and any token that would repeat an n-gram of
    `no_repeat_ngram_size` tokens already in its row (Paulus et al., 2018)."""
    if step < min_new_tokens:
        log_probs[:, eos_token_id] = float("-inf")
    n = no_repeat_ngram_size
    if n > 0 and tokens.size(1) >= n:
        rows = tokens.tolist()
        for row, sequence in enumerate(rows):
            prefix = tuple(sequence[len(sequence) - n + 1 :])
            banned = [
                sequence[start + n - 1]
                for start in range(len(sequence) - n + 1)
                if tuple(sequence[start : start + n - 1]) == prefix
            ]
            if banned:
                log_probs[row, banned] = float("-inf")
    return log_probs


def _check_length(model_max_len: int, prompt_len: int, max_new_tokens: int) -> None:
    if prompt_len + max_new_tokens > model_max_len:
        raise ValueError(
            f"prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) exceeds "
            f"max_len={model_max_len}"
        )


@torch.no_grad()
def generate(
    model: CausalLanguageModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue a batch of prompts: greedy (argmax) or, with do_sample, sampled.

    Prompts of different lengths must be LEFT-padded, with attention_mask marking the real
    tokens, so every row's next token is at the end; positions count real tokens only, so a
    padded prompt continues exactly as it would alone. Returns (B, T + n), the prompts followed
    by n ≤ max_new_tokens new tokens; a row that has produced eos_token_id is filled with
    config.pad_token_id, and generation stops once every row has.
    """
    if attention_mask is not None and not bool(attention_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded: the last position of each row must be real")
    _check_length(model.config.max_len, input_ids.size(1), max_new_tokens)
    cache = DecoderCache()
    sequences, new_tokens = input_ids, input_ids
    finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = model(new_tokens, attention_mask, cache=cache).logits[:, -1]
        if do_sample:
            next_token = sample_next_token(logits, temperature, top_k, top_p, generator)
        else:
            next_token = logits.argmax(dim=-1)
        next_token = next_token.masked_fill(finished, model.config.pad_token_id)
        sequences = torch.cat((sequences, next_token[:, None]), dim=1)
        if eos_token_id is not None:
            finished |= next_token == eos_token_id
            if bool(finished.all()):
                break
        new_tokens = next_token[:, None]
        if attention_mask is not None:
            attention_mask = torch.cat((attention_mask, torch.ones_like(new_tokens)), dim=1)
    return sequences


@torch.no_grad()
def greedy_translate(
    model: Seq2SeqTransformer,
    source_ids: Tensor,
    source_mask: Tensor | None,
    bos_token_id: int,
    eos_token_id: int,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
) -> Tensor:
    """Argmax decoding (under `constrain_next`). Returns (B, n ≤ max_new_tokens) target tokens
    after BOS, EOS included where produced, config.pad_token_id after it."""
    _check_length(model.config.max_len, 1, max_new_tokens)
    memory = model.encode(source_ids, source_mask)
    B = source_ids.size(0)
    cache = DecoderCache()
    token = torch.full((B, 1), bos_token_id, dtype=torch.long, device=source_ids.device)
    finished = torch.zeros(B, dtype=torch.bool, device=source_ids.device)
    outputs: list[Tensor] = []
    for step in range(max_new_tokens):
        logits = model.decode(token, memory, source_mask, cache=cache)[:, -1].float()
        generated = torch.stack(outputs, dim=1) if outputs else token[:, :0]
        logits = constrain_next(
            logits, generated, step, eos_token_id, min_new_tokens, no_repeat_ngram_size
        )
        next_token = logits.argmax(dim=-1).masked_fill(finished, model.config.pad_token_id)
        outputs.append(next_token)
        finished |= next_token == eos_token_id
        if bool(finished.all()):
            break
        token = next_token[:, None]
    return torch.stack(outputs, dim=1)


@torch.no_grad()
def beam_search(
    model: Seq2SeqTransformer,
    source_ids: Tensor,
    source_mask: Tensor | None,
    bos_token_id: int,
    eos_token_id: int,
    max_new_tokens: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
) -> Tensor:
    """Beam search (each step under `constrain_next`); same output format as greedy_translate,
    the best hypothesis per source.

    Each source keeps beam_size hypotheses ranked by total log-probability. A hypothesis that
    has produced EOS stays in the beam with its score frozen (it continues with padding at
    log-probability 0) until every beam has finished or max_new_tokens is reached. The winner
    maximises score / length^length_penalty, length counting the tokens up to EOS; 0 ranks by
    total log-probability, which favours short outputs.
    """
    _check_length(model.config.max_len, 1, max_new_tokens)
    B, K, pad = source_ids.size(0), beam_size, model.config.pad_token_id
    device = source_ids.device
    # Row b·K + k holds beam k of source b.
    memory = model.encode(source_ids, source_mask).repeat_interleave(K, dim=0)
    memory_mask = None if source_mask is None else source_mask.repeat_interleave(K, dim=0)
    tokens = torch.full((B * K, 1), bos_token_id, dtype=torch.long, device=device)
    # All beams start as the same [BOS]: let only the first one expand at step one, so the
    # first step yields K different hypotheses rather than K copies of the best.
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, device=device)
    cache = DecoderCache()
    for step in range(max_new_tokens):
        log_probs = model.decode(tokens[:, -1:], memory, memory_mask, cache=cache)[:, -1]
        log_probs = log_probs.float().log_softmax(dim=-1)  # (B·K, V)
        log_probs = constrain_next(
            log_probs, tokens[:, 1:], step, eos_token_id, min_new_tokens, no_repeat_ngram_size
        )
        log_probs[finished] = float("-inf")
        log_probs[finished, pad] = 0.0
        V = log_probs.size(-1)
        candidates = (scores.reshape(-1, 1) + log_probs).view(B, K * V)
        scores, flat_index = candidates.topk(K, dim=-1)  # (B, K)
        parent = (torch.arange(B, device=device)[:, None] * K + flat_index // V).flatten()
        next_token = (flat_index % V).flatten()
        tokens = torch.cat((tokens[parent], next_token[:, None]), dim=1)
        lengths = lengths[parent] + (~finished[parent]).float()
        finished = finished[parent] | (next_token == eos_token_id)
        cache.reorder(parent)
        if bool(finished.all()):
            break
    normalised = scores.flatten() / lengths.clamp(min=1.0) ** length_penalty
    best = torch.arange(B, device=device) * K + normalised.view(B, K).argmax(dim=-1)
    return tokens[best, 1:]
