"""Adversarial training on the token embeddings: the attack's size and direction, and that it
raises the loss more than a random move of the same size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transformer_pl.model import TransformerConfig
from transformer_pl.tasks import ClassifierTask
from transformer_pl.tasks.classifier import adversarial_perturbation

CONFIG = TransformerConfig(
    vocab_size=40, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=16, dropout=0.0
)


def classifier(adversarial_epsilon: float = 0.0) -> ClassifierTask:
    """No dropout anywhere: two passes over one batch see the same network."""
    return ClassifierTask(
        CONFIG, num_labels=2, classifier_dropout=0.0, adversarial_epsilon=adversarial_epsilon
    )


def test_perturbation_has_size_epsilon_per_example_along_the_gradient() -> None:
    gradient = torch.randn(3, 5, 4)
    gradient[1] *= 1e3  # examples of very different gradient sizes get the same size of attack
    attack = adversarial_perturbation(gradient, epsilon=0.7)
    torch.testing.assert_close(attack.flatten(1).norm(dim=1), torch.full((3,), 0.7))
    cosine = F.cosine_similarity(attack.flatten(1), gradient.flatten(1), dim=1)
    torch.testing.assert_close(cosine, torch.ones(3))
    assert not adversarial_perturbation(torch.zeros(2, 5, 4), 0.7).isnan().any()


def batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(3, 40, (8, 10), generator=generator),
        "attention_mask": torch.ones(8, 10, dtype=torch.long),
        "labels": torch.randint(0, 2, (8,), generator=generator),
    }


@pytest.mark.parametrize("epsilon", [0.05, 0.5])
def test_attack_raises_the_loss_more_than_a_random_move_of_its_size(epsilon: float) -> None:
    torch.manual_seed(0)
    task = classifier(epsilon)
    data = batch(1)
    ids, mask, labels = data["input_ids"], data["attention_mask"], data["labels"]

    def loss(perturbation: torch.Tensor | None) -> float:
        logits = task.model(ids, mask, embedding_perturbation=perturbation).logits
        return F.cross_entropy(logits, labels).item()

    probe = torch.zeros(8, 10, CONFIG.d_model, requires_grad=True)
    logits = task.model(ids, mask, embedding_perturbation=probe).logits
    (gradient,) = torch.autograd.grad(F.cross_entropy(logits, labels), probe)
    random_move = adversarial_perturbation(torch.randn_like(gradient), epsilon)
    attacked, clean = loss(adversarial_perturbation(gradient, epsilon)), loss(None)
    assert attacked > clean
    assert attacked - clean > 3 * abs(loss(random_move) - clean)


def test_training_loss_adds_the_attacked_loss_and_validation_ignores_it() -> None:
    torch.manual_seed(0)
    plain, adversarial = classifier(), classifier(adversarial_epsilon=0.5)
    adversarial.load_state_dict(plain.state_dict())
    data = batch(2)
    clean_loss, predictions, _ = plain._step(data, training=True)
    trained_loss, adversarial_predictions, _ = adversarial._step(data, training=True)
    assert clean_loss < trained_loss - clean_loss < 2 * clean_loss  # the attacked loss is higher
    torch.testing.assert_close(adversarial_predictions, predictions)  # from the clean logits
    torch.testing.assert_close(
        adversarial._step(data, training=False)[0], plain._step(data, training=False)[0]
    )
    trained_loss.backward()  # gradients reach the embedding through both passes
    assert adversarial.model.encoder.embedding.weight.grad.abs().sum() > 0


def test_negative_epsilon_is_rejected() -> None:
    with pytest.raises(ValueError, match="adversarial_epsilon must be >= 0"):
        classifier(adversarial_epsilon=-0.1)
