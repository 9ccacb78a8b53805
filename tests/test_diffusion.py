"""Tests for the masked-diffusion forward process and its ELBO-weighted loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffuspeech.diffusion import MIN_TIME, NoisedBatch, add_noise, diffusion_loss
from diffuspeech.interfaces import NoiseSchedule
from diffuspeech.layouts import TASK_SPANS, Budgets, build_layout
from diffuspeech.vocabulary import SPEECH, TEXT, Vocabulary
from diffuspeech_plugins.noise_schedules.cosine import CosineSchedule
from diffuspeech_plugins.noise_schedules.linear import LinearSchedule


def layout_batch(
    vocabulary: Vocabulary, budgets: Budgets, copies: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay out ``copies`` random examples of every task, right-padded into (b, n) tensors.

    Returns tokens, target_mask and modality; padding is ``pad_id``, not a target, modality -1.
    """
    generator = torch.Generator().manual_seed(seed)
    lengths = {"transcript": 3, "thought": 2, "answer": 2, "reply_units": 3, "question": 3, "question_units": 4}
    layouts = []
    for index in range(copies):
        for task, spans in TASK_SPANS.items():
            fields: dict[str, list[int] | None] = {}
            for name, modality, _ in spans:
                size = lengths[name] - index % 2
                if modality == TEXT:
                    fields[name] = torch.randint(0, vocabulary.text_size, (size,), generator=generator).tolist()
                else:
                    units = torch.randint(0, vocabulary.num_units, (size,), generator=generator)
                    fields[name] = vocabulary.units_to_ids(units).tolist()
            layouts.append(build_layout(task, fields, vocabulary, budgets))

    length = max(layout.tokens.numel() for layout in layouts)
    tokens = torch.full((len(layouts), length), vocabulary.pad_id, dtype=torch.long)
    target_mask = torch.zeros(len(layouts), length, dtype=torch.bool)
    modality = torch.full((len(layouts), length), -1, dtype=torch.long)
    for row, layout in enumerate(layouts):
        n = layout.tokens.numel()
        tokens[row, :n] = layout.tokens
        target_mask[row, :n] = layout.target_mask
        modality[row, :n] = layout.modality
    return tokens, target_mask, modality


def two_modality_batch(batch_size: int, per_modality: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return tokens, target_mask and modality for rows of 2 condition, then text, then speech targets."""
    modality = torch.tensor([-1, -1] + [TEXT] * per_modality + [SPEECH] * per_modality).repeat(batch_size, 1)
    tokens = torch.arange(modality.shape[1]).repeat(batch_size, 1)
    return tokens, modality >= 0, modality


def linear_schedules() -> dict[int, NoiseSchedule]:
    return {TEXT: LinearSchedule(), SPEECH: LinearSchedule()}


def test_condition_never_masked(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Task tokens, markers, condition content and padding stay clean over many draws."""
    tokens, target_mask, modality = layout_batch(vocabulary, budgets, copies=4)
    generator = torch.Generator().manual_seed(0)
    ever_masked = torch.zeros_like(target_mask)

    for _ in range(300):
        noised = add_noise(tokens, target_mask, modality, linear_schedules(), vocabulary.mask_id, generator)
        assert not (noised.masked & ~target_mask).any()
        assert torch.equal(noised.tokens[~target_mask], tokens[~target_mask])
        ever_masked |= noised.masked

    # Guards against a forward process that masks nothing at all.
    assert bool(ever_masked[target_mask].all())


def test_masked_positions_hold_mask_id(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Masked positions hold the mask id; unmasked targets keep their clean token."""
    tokens, target_mask, modality = layout_batch(vocabulary, budgets, copies=4)

    noised = add_noise(
        tokens, target_mask, modality, linear_schedules(), vocabulary.mask_id, torch.Generator().manual_seed(1)
    )

    assert bool((noised.tokens[noised.masked] == vocabulary.mask_id).all())
    unmasked_targets = target_mask & ~noised.masked
    assert torch.equal(noised.tokens[unmasked_targets], tokens[unmasked_targets])
    assert noised.masked.any()
    assert unmasked_targets.any()


def test_masked_fraction_follows_schedule() -> None:
    """The masked share of each modality's targets follows that modality's gamma(t) on a large batch."""
    schedules: dict[int, NoiseSchedule] = {TEXT: LinearSchedule(), SPEECH: CosineSchedule()}
    per_modality = 16
    tokens, target_mask, modality = two_modality_batch(4000, per_modality)

    noised = add_noise(tokens, target_mask, modality, schedules, mask_id=-1, generator=torch.Generator().manual_seed(0))

    for code, schedule in schedules.items():
        counts = (noised.masked & (modality == code)).sum(dim=1).double()
        gamma = schedule.mask_probability(noised.times[code].double())

        # Each row's count is Binomial(per_modality, gamma), so the summed residual has a known variance.
        expected = per_modality * gamma
        variance = per_modality * gamma * (1 - gamma)
        z_score = (counts - expected).sum() / variance.sum().sqrt()
        assert abs(float(z_score)) < 4, f"modality {code}: z-score {float(z_score):.1f}"

        # Within each tenth of the time range, the masked share matches the mean of gamma.
        fraction = counts / per_modality
        for low in torch.arange(0.0, 1.0, 0.1).tolist():
            in_bin = (noised.times[code] >= low) & (noised.times[code] < low + 0.1)
            assert float(fraction[in_bin].mean()) == pytest.approx(float(gamma[in_bin].mean()), abs=0.03)


def test_fraction_check_detects_wrong_schedule() -> None:
    """The speech counts of a cosine schedule are far from what the linear schedule predicts."""
    per_modality = 16
    tokens, target_mask, modality = two_modality_batch(4000, per_modality)
    schedules: dict[int, NoiseSchedule] = {TEXT: LinearSchedule(), SPEECH: CosineSchedule()}

    noised = add_noise(tokens, target_mask, modality, schedules, mask_id=-1, generator=torch.Generator().manual_seed(0))

    counts = (noised.masked & (modality == SPEECH)).sum(dim=1).double()
    wrong_gamma = LinearSchedule().mask_probability(noised.times[SPEECH].double())
    variance = per_modality * wrong_gamma * (1 - wrong_gamma)
    z_score = (counts - per_modality * wrong_gamma).sum() / variance.sum().sqrt()
    assert abs(float(z_score)) > 10


def test_times_drawn_per_modality() -> None:
    """Text and speech get separate time draws per sequence, each in [MIN_TIME, 1]."""
    tokens, target_mask, modality = two_modality_batch(4000, 4)

    noised = add_noise(
        tokens, target_mask, modality, linear_schedules(), mask_id=-1, generator=torch.Generator().manual_seed(0)
    )

    text_times, speech_times = noised.times[TEXT], noised.times[SPEECH]
    assert text_times.shape == (4000,)
    assert speech_times.shape == (4000,)
    for times in (text_times, speech_times):
        assert float(times.min()) >= MIN_TIME
        assert float(times.max()) <= 1.0
    assert not torch.equal(text_times, speech_times)
    correlation = torch.corrcoef(torch.stack([text_times, speech_times]))[0, 1]
    assert abs(float(correlation)) < 0.1


def test_weight_follows_modality_time() -> None:
    """Each target position's weight is its modality's loss_weight(t); other positions weigh 0."""
    schedules: dict[int, NoiseSchedule] = {TEXT: LinearSchedule(), SPEECH: CosineSchedule()}
    tokens, target_mask, modality = two_modality_batch(64, 4)

    noised = add_noise(tokens, target_mask, modality, schedules, mask_id=-1, generator=torch.Generator().manual_seed(0))

    for code, schedule in schedules.items():
        expected = schedule.loss_weight(noised.times[code])[:, None].expand_as(tokens)
        positions = modality == code
        torch.testing.assert_close(noised.weight[positions], expected[positions].float())
    assert bool((noised.weight[~target_mask] == 0).all())


def test_same_generator_same_noise(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Two draws from generators with the same seed mask the same positions."""
    tokens, target_mask, modality = layout_batch(vocabulary, budgets, copies=2)

    first = add_noise(tokens, target_mask, modality, linear_schedules(), 0, torch.Generator().manual_seed(3))
    second = add_noise(tokens, target_mask, modality, linear_schedules(), 0, torch.Generator().manual_seed(3))

    assert torch.equal(first.masked, second.masked)
    assert torch.equal(first.times[TEXT], second.times[TEXT])


def test_loss_ignores_unmasked_logits(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Changing logits at unmasked positions, condition included, leaves the loss unchanged."""
    tokens, target_mask, modality = layout_batch(vocabulary, budgets, copies=4)
    noised = add_noise(
        tokens, target_mask, modality, linear_schedules(), vocabulary.mask_id, torch.Generator().manual_seed(0)
    )
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(*tokens.shape, vocabulary.size, generator=generator)
    loss = diffusion_loss(logits, tokens, noised, target_mask)

    changed = logits.clone()
    changed[~noised.masked] = 10 * torch.randn(int((~noised.masked).sum()), vocabulary.size, generator=generator)

    assert torch.equal(diffusion_loss(changed, tokens, noised, target_mask), loss)


def test_loss_reads_masked_logits(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Changing the logits of one masked position changes the loss."""
    tokens, target_mask, modality = layout_batch(vocabulary, budgets, copies=4)
    noised = add_noise(
        tokens, target_mask, modality, linear_schedules(), vocabulary.mask_id, torch.Generator().manual_seed(0)
    )
    logits = torch.randn(*tokens.shape, vocabulary.size, generator=torch.Generator().manual_seed(1))
    loss = diffusion_loss(logits, tokens, noised, target_mask)

    row, position = noised.masked.nonzero()[0].tolist()
    changed = logits.clone()
    changed[row, position, tokens[row, position]] += 5.0

    assert float(diffusion_loss(changed, tokens, noised, target_mask)) < float(loss)


def test_loss_matches_hand_computation() -> None:
    """The loss sums weighted cross entropy over masked targets, divides by each row's target count, then averages."""
    logits = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    clean = torch.tensor([[0, 1, 2, 3], [4, 3, 2, 1]])
    target_mask = torch.tensor([[False, True, True, True], [False, False, True, True]])
    masked = torch.tensor([[False, True, False, True], [False, False, True, False]])
    weight = torch.tensor([[0.0, 2.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]])
    noised = NoisedBatch(tokens=clean, masked=masked, weight=weight, times={})

    log_probabilities = F.log_softmax(logits, dim=-1)
    first = (2.0 * -log_probabilities[0, 1, 1] + 2.0 * -log_probabilities[0, 3, 3]) / 3
    second = (4.0 * -log_probabilities[1, 2, 2]) / 2
    expected = (first + second) / 2

    torch.testing.assert_close(diffusion_loss(logits, clean, noised, target_mask), expected)


def test_loss_row_without_targets() -> None:
    """A row with no target positions adds zero to the sum instead of NaN."""
    logits = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    clean = torch.tensor([[0, 1, 2], [3, 2, 1]])
    target_mask = torch.tensor([[False, True, True], [False, False, False]])
    masked = torch.tensor([[False, True, True], [False, False, False]])
    weight = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    noised = NoisedBatch(tokens=clean, masked=masked, weight=weight, times={})

    loss = diffusion_loss(logits, clean, noised, target_mask)

    single = diffusion_loss(logits[:1], clean[:1], NoisedBatch(clean[:1], masked[:1], weight[:1], {}), target_mask[:1])
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, single / 2)
