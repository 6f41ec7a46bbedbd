"""Hard sample mining: the mechanics of the paper's step, not just that it runs."""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch

from ngp_ohem.field.hashgrid import HashGridSpec
from ngp_ohem.field.native import load_render_native
from ngp_ohem.field.ngp import FieldSpec, NGPField
from ngp_ohem.mining import FullBatch, HardSampleMining, score_samples, top_indices
from ngp_ohem.render.march import PackedSamples

CHI2_CRITICAL_DF19_P001 = 43.82  # chi-square quantile, 19 degrees of freedom, p = 0.001


def tiny_field(seed: int = 0) -> NGPField:
    torch.manual_seed(seed)
    spec = FieldSpec(HashGridSpec(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=32))
    field = NGPField(spec, bound=1.0)
    with torch.no_grad():  # a non-trivial starting point: larger table values than the default init
        field.encoding.table.uniform_(-0.5, 0.5)
    return field


def packed_batch(
    n_rays: int = 24, per_ray: int = 12, seed: int = 0
) -> tuple[PackedSamples, torch.Tensor, torch.Tensor]:
    """Straight rays through the unit box with evenly spaced samples, random targets and backgrounds."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.rand(n_rays, 3, generator=g) * 0.4 - 0.2 + torch.tensor([0.0, 0.0, 0.9])
    dirs = torch.nn.functional.normalize(
        torch.randn(n_rays, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, -1.0]), dim=-1
    )
    t = torch.linspace(0.05, 1.6, per_ray)
    positions = (origins[:, None] + t[None, :, None] * dirs[:, None]).reshape(-1, 3).clamp(-1, 1)
    ray_index = torch.arange(n_rays).repeat_interleave(per_ray)
    samples = PackedSamples(
        positions=positions,
        directions=dirs[ray_index],
        deltas=torch.full((n_rays * per_ray,), 1.55 / (per_ray - 1)),
        ray_index=ray_index,
        n_rays=n_rays,
    )
    return samples, torch.rand(n_rays, 3, generator=g), torch.rand(n_rays, 3, generator=g)


def parameter_grads(field: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in field.parameters()])


def test_forced_full_hard_set_reproduces_baseline_gradients():
    samples, target, bg = packed_batch()
    base, mined = tiny_field(), tiny_field()
    mined.load_state_dict(base.state_dict())
    FullBatch().backward(base, samples, target, bg)
    result = HardSampleMining(min_fraction=1.0, max_fraction=1.0).backward(mined, samples, target, bg)
    assert result.n_hard > 0.5 * samples.n_samples  # all samples with a non-zero gradient were taken
    torch.testing.assert_close(parameter_grads(mined), parameter_grads(base), rtol=1e-5, atol=1e-7)


def test_graph_bytes_scale_with_hard_batch_not_full_batch():
    samples, target, bg = packed_batch(n_rays=64, per_ray=32)
    base = FullBatch().backward(tiny_field(), samples, target, bg)
    bytes_at = {}
    for fraction in (0.25, 0.5):
        step = HardSampleMining(min_fraction=fraction, max_fraction=fraction)
        result = step.backward(tiny_field(), samples, target, bg)
        assert result.n_hard == round(fraction * samples.n_samples)
        bytes_at[fraction] = result.graph_bytes
    ratio = bytes_at[0.5] / bytes_at[0.25]
    assert 1.8 < ratio < 2.2, f"graph bytes should double with b, got ratio {ratio:.3f}"
    assert bytes_at[0.5] < 0.6 * base.graph_bytes


def test_selection_frequencies_follow_hardness():
    hardness = torch.linspace(0.2, 3.0, 20) ** 2
    g = hardness / hardness.sum()
    miner = HardSampleMining(min_fraction=0.05, max_fraction=0.05, generator=torch.Generator().manual_seed(7))
    draws = 20000
    counts = torch.zeros(20)
    for _ in range(draws):
        chosen = miner.select(hardness)
        assert chosen.index.numel() == 1  # b = 0.05 * 20
        counts[chosen.index] += 1
    expected = g * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_CRITICAL_DF19_P001, f"chi-square {chi2:.1f} rejects selection proportional to g"


def test_selection_without_replacement_takes_distinct_indices():
    hardness = torch.rand(1000, generator=torch.Generator().manual_seed(1)) + 0.01
    chosen = HardSampleMining(generator=torch.Generator().manual_seed(2)).select(hardness)
    assert chosen.index.unique().numel() == chosen.index.numel() == 500  # tau_ema starts at 1: b = 0.5 B


def test_fewer_nonzero_hardness_than_b_takes_them_all():
    hardness = torch.zeros(100)
    hardness[[3, 50, 97]] = torch.tensor([1.0, 2.0, 3.0])
    chosen = HardSampleMining().select(hardness)
    assert sorted(chosen.index.tolist()) == [3, 50, 97]


def test_all_zero_or_no_hardness_selects_nothing_and_keeps_tau():
    miner = HardSampleMining()
    for hardness in (torch.zeros(100), torch.zeros(0)):
        assert miner.select(hardness).index.numel() == 0
    assert miner.tau_ema == 1.0


def test_tau_is_one_for_uniform_hardness_and_b_respects_clamps():
    miner = HardSampleMining()
    n = 1000
    b = miner.update_batch_size(n, n * (1.0 / n) ** 2)
    assert miner.tau_ema == pytest.approx(1.0)
    assert b == n // 2  # b = B / 1 clamped to 0.5 B
    peaked = torch.full((n,), 1e-6)
    peaked[0] = 1.0
    peaked /= peaked.sum()
    sizes = [miner.update_batch_size(n, float((peaked**2).sum())) for _ in range(2000)]
    assert all(0.05 * n <= s <= 0.5 * n for s in sizes)
    assert sizes[-1] == round(0.05 * n)  # tau_ema has grown far beyond 20
    assert miner.tau_ema > 20


def test_tau_formula_matches_variance_reduction_definition():
    g = torch.rand(500, generator=torch.Generator().manual_seed(3))
    g /= g.sum()
    u = torch.full_like(g, 1 / g.numel())
    definition = (1 - ((g - u) ** 2).sum() / (g**2).sum()) ** -0.5
    miner = HardSampleMining(tau_decay=0.0)  # tau_ema becomes the latest tau
    miner.update_batch_size(g.numel(), float((g**2).sum()))
    assert miner.tau_ema == pytest.approx(float(definition), rel=1e-5)


def _mean_gradient_error(unbiased: bool, draws: int) -> tuple[float, float]:
    """(||mean mined gradient - full gradient||^2, its Monte-Carlo variance) over ``draws`` steps."""
    samples, target, bg = packed_batch(n_rays=16, per_ray=10, seed=5)
    field = tiny_field(3)
    FullBatch().backward(field, samples, target, bg)
    full = parameter_grads(field).clone()
    miner = HardSampleMining(
        min_fraction=0.2, max_fraction=0.2, unbiased=unbiased, generator=torch.Generator().manual_seed(11)
    )
    grads = []
    for _ in range(draws):
        field.zero_grad(set_to_none=True)
        miner.backward(field, samples, target, bg)
        grads.append(parameter_grads(field).clone())
    stacked = torch.stack(grads)
    error = float(((stacked.mean(0) - full) ** 2).sum())
    mc_variance = float(stacked.var(0).sum()) / draws
    return error, mc_variance


def test_unbiased_variant_mean_gradient_matches_full_batch():
    error, mc_variance = _mean_gradient_error(unbiased=True, draws=400)
    # For an unbiased estimator E[error] = mc_variance; allow generous slack for one realisation.
    assert error < 3.0 * mc_variance, f"error {error:.3e} vs Monte-Carlo variance {mc_variance:.3e}"


def test_published_variant_is_biased_which_the_unbiased_test_would_detect():
    error, mc_variance = _mean_gradient_error(unbiased=False, draws=400)
    assert error > 10.0 * mc_variance  # shows the test above has the power to see a bias


def test_mined_step_reports_statistics():
    samples, target, bg = packed_batch()
    miner = HardSampleMining()
    result = miner.backward(tiny_field(), samples, target, bg)
    assert result.n_samples == samples.n_samples
    assert 0 < result.n_hard <= math.ceil(0.5 * samples.n_samples)
    assert result.graph_bytes > 0 and torch.isfinite(result.loss)
    # The EMA survives a checkpoint: a miner restored from another's state keeps the same hard set size.
    miner.tau_ema = 4.0
    restored = HardSampleMining()
    restored.load_state_dict(copy.deepcopy(miner.state_dict()))
    assert restored.tau_ema == 4.0
    again, fresh = (
        miner.backward(tiny_field(), samples, target, bg),
        HardSampleMining().backward(tiny_field(), samples, target, bg),
    )
    assert restored.backward(tiny_field(), samples, target, bg).n_hard == again.n_hard < fresh.n_hard


def test_profiling_reports_every_phase():
    samples, target, bg = packed_batch()
    start = time.perf_counter()
    result = HardSampleMining(profile=True).backward(tiny_field(), samples, target, bg)
    elapsed = time.perf_counter() - start
    assert set(result.phase_seconds) == {"forward_all", "score", "select", "forward_hard", "backward"}
    base = FullBatch(profile=True).backward(tiny_field(), samples, target, bg)
    assert set(base.phase_seconds) == {"forward", "backward"}
    # Every phase was timed, and the phases are disjoint spans of the one call.
    assert all(v > 0 for v in result.phase_seconds.values()) and all(v > 0 for v in base.phase_seconds.values())
    assert sum(result.phase_seconds.values()) <= elapsed


needs_native_render = pytest.mark.skipif(load_render_native() is None, reason="native rendering kernels not built")


@needs_native_render
@pytest.mark.parametrize("density_scale", [0.5, 40.0])  # 40: most rays terminate early (weights 0 behind)
def test_fused_scoring_matches_the_autograd_reference(density_scale):
    samples, target, bg = packed_batch(n_rays=40, per_ray=16, seed=3)
    keep = samples.ray_index != 7  # ray 7 has no samples at all
    samples = PackedSamples(
        samples.positions[keep], samples.directions[keep], samples.deltas[keep], samples.ray_index[keep], 40
    )
    g = torch.Generator().manual_seed(4)
    raw = torch.randn(samples.n_samples, 4, generator=g)
    raw[:, 0] = raw[:, 0] + math.log(density_scale)
    raw[::5, 0] = 18.0  # past the truncated exp's gradient clamp at 15
    fused = score_samples(raw, samples, target, bg)
    reference = score_samples(raw, samples, target, bg, use_native=False)
    torch.testing.assert_close(fused.loss, reference.loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused.grad_raw, reference.grad_raw, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(fused.hardness, reference.hardness, rtol=1e-4, atol=1e-8)
    for a, b in zip(fused.sums, reference.sums, strict=True):
        assert a == pytest.approx(b, rel=1e-4)


@needs_native_render
def test_top_indices_is_topk_set_in_ascending_order():
    g = torch.Generator().manual_seed(0)
    key = torch.rand(5000, generator=g)
    key[100:140] = 0.5  # ties straddling the cut for some b
    key[200:900] = 0.0  # hardness zero past early termination
    key[950] = float("inf")  # a uniform draw of 0
    for b in (0, 1, 7, 120, 2500, 4300, 4999, 5000):
        got = top_indices(key, b)
        assert got.numel() == b and bool((got[1:] > got[:-1]).all())
        expected = torch.topk(key, b).values
        torch.testing.assert_close(key[got].sort(descending=True).values, expected)


def test_hard_set_is_the_b_largest_exponential_keys_of_the_generator_draws():
    """The selection is the b largest g / -log(u), u the generator's uniform draws, in ascending order."""
    hardness = torch.rand(3000, generator=torch.Generator().manual_seed(5)) ** 4
    hardness[::7] = 0.0  # samples past early termination
    chosen = HardSampleMining(generator=torch.Generator().manual_seed(6)).select(hardness)
    twin = HardSampleMining(generator=torch.Generator().manual_seed(6))
    b = twin.update_batch_size(hardness.numel(), float(hardness.square().sum() / hardness.sum() ** 2))
    u = torch.empty(hardness.numel()).uniform_(generator=twin.generator)
    keys = (hardness / hardness.sum()) / -torch.log(u)
    assert torch.equal(chosen.index, torch.topk(keys, b).indices.sort().values)


def test_hard_set_is_drawn_as_torch_multinomial_draws_without_replacement():
    """Inclusion frequencies of each sample over many selections match torch.multinomial's (same
    weights, same b), within 5 standard errors: the same distribution of sets."""
    hardness = torch.tensor([8.0, 4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.0])
    trials, b = 4000, 3
    miner = HardSampleMining(generator=torch.Generator().manual_seed(1))
    miner.update_batch_size = lambda n, sum_g2: b  # b fixed: only the draw is under test
    ours = torch.zeros(hardness.numel())
    theirs = torch.zeros(hardness.numel())
    gen = torch.Generator().manual_seed(2)
    for _ in range(trials):
        ours[miner.select(hardness).index] += 1
        theirs[torch.multinomial(hardness, b, replacement=False, generator=gen)] += 1
    p_ours, p_theirs = ours / trials, theirs / trials
    se = ((p_ours * (1 - p_ours) + p_theirs * (1 - p_theirs)) / trials).sqrt().clamp(min=1e-3)
    assert bool(((p_ours - p_theirs).abs() <= 5 * se).all()), (p_ours, p_theirs)
    assert ours[-1] == 0  # zero hardness is never drawn
    assert ours.sum() == trials * b
