"""The training engine with real torch and smp on a tiny learnable dataset (32x32 frames, a bright disc)."""

import math

import numpy as np
import pytest
import torch

from lusbench.data.confidence import binarize
from lusbench.data.dataset import LUSDataset
from lusbench.errors import UserError
from lusbench.train import engine as training
from lusbench.train.augment import augment_batch
from lusbench.train.strategy import LabelStrategy
from lusbench_builtins.models import unet
from lusbench_builtins.strategies import random_rater, soft, stochastic_threshold, threshold, weighted

SIZE = 32
CPU = torch.device("cpu")


def disc_dataset(n: int = 40, seed: int = 0) -> LUSDataset:
    """Frames with a bright disc; class b_lines confidence ramps from 1 inside the disc to 0 outside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((n, SIZE, SIZE), np.uint8)
    confidence = np.zeros((n, 5, SIZE, SIZE), np.uint8)
    for i in range(n):
        cx, cy = rng.integers(8, 24, 2)
        radius = rng.integers(4, 8)
        d = np.hypot(xx - cx, yy - cy)
        images[i] = np.clip(60 + 120 * (d < radius) + rng.normal(0, 15, (SIZE, SIZE)), 0, 255)
        confidence[i, 2] = np.clip(np.round(10 * (radius + 2 - d) / 4), 0, 10)
    return LUSDataset("disc", images, confidence, 10, np.arange(n) // 4, np.ones(n, int), np.zeros(n, int))


def config(**changes) -> training.TrainConfig:
    base = {"epochs": 3, "batch_size": 8, "lr": 3e-3, "weight_decay": 1e-4, "patience": 3, "augment": True, "amp": True}
    return training.TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    images, confidence = training.dataset_tensors(disc_dataset(), CPU)
    return images, confidence, np.arange(32), np.arange(32, 40)


def fit(data, strategy=None, seed=0, on_epoch=None, **changes):
    images, confidence, train_idx, val_idx = data
    return training.train_model(unet(), strategy or threshold("0.5"), images, confidence, train_idx, val_idx,
                                config(**changes), seed=seed, device=CPU, on_epoch=on_epoch)


def test_config_validates_and_serializes():
    assert config().to_json() == {"epochs": 3, "batch_size": 8, "lr": 3e-3, "weight_decay": 1e-4, "patience": 3,
                                  "augment": True, "amp": True, "min_epochs": 1, "normalize": "unit"}
    assert config(patience=None).patience is None
    for bad in ({"epochs": 0}, {"batch_size": 2.5}, {"lr": 0.0}, {"weight_decay": -1.0}, {"patience": 0},
                {"min_epochs": 4}, {"normalize": "zscore"}, {"patience": True}):
        with pytest.raises(UserError):
            config(**bad)


def test_resolve_device():
    assert training.resolve_device("cpu") == CPU
    assert training.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError):
        training.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            training.resolve_device("cuda")


def test_dataset_tensors_are_float_unit_range_on_device():
    dataset = disc_dataset(6)
    images, confidence = training.dataset_tensors(dataset, CPU)
    assert images.shape == (6, 1, SIZE, SIZE) and confidence.shape == (6, 5, SIZE, SIZE)
    assert images.dtype == confidence.dtype == torch.float32
    assert torch.equal(images[:, 0], torch.from_numpy(dataset.images).float() / 255)
    assert torch.equal(confidence, torch.from_numpy(dataset.confidence_float()))


def test_same_seed_same_weights_and_history(data):
    a, b = fit(data, seed=5, epochs=2), fit(data, seed=5, epochs=2)
    for (key, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    timeless = [[{k: v for k, v in h.items() if k not in ("img_per_s", "seconds")} for h in run.history] for run in (a, b)]
    assert timeless[0] == timeless[1]
    c = fit(data, seed=6, epochs=1)
    assert not torch.equal(a.model.encoder.conv1.weight, c.model.encoder.conv1.weight)


def test_training_restores_global_determinism_setting(data):
    before = torch.are_deterministic_algorithms_enabled()
    fit(data, epochs=1)
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.parametrize("strategy", [threshold("0.6"), soft(), weighted()], ids=lambda s: s.name)
def test_loss_goes_down_and_progress_is_reported(data, strategy):
    seen = []
    trained = fit(data, strategy, epochs=4, patience=4, on_epoch=lambda epoch, stats: seen.append((epoch, stats)))
    assert [e for e, _ in seen] == [0, 1, 2, 3]
    assert {"train_loss", "val_loss", "lr", "img_per_s", "seconds"} <= set(seen[0][1])
    losses = [h["train_loss"] for h in trained.history]
    assert losses[-1] < losses[0]
    assert all(s["img_per_s"] > 0 for _, s in seen)


def _flipped(data):
    """Validation frames labelled with the complement of every class: learning the task makes them worse, so
    the validation loss is lowest at the very start; what epoch-0 selection would pick."""
    images, confidence, train_idx, val_idx = data
    flipped = confidence.clone()
    flipped[val_idx] = 1 - flipped[val_idx]
    return images, flipped, train_idx, val_idx


def test_early_stopping_selects_the_best_epoch_after_the_warm_up(data):
    images, flipped, train_idx, val_idx = _flipped(data)
    strategy = threshold("0.5")
    cfg = config(epochs=10, patience=2)
    assert cfg.first_stoppable_epoch == 1  # warm-up: 20% of 10 epochs
    trained = training.train_model(unet(), strategy, images, flipped, train_idx, val_idx, cfg, seed=0, device=CPU)
    val = [h["val_loss"] for h in trained.history]
    assert trained.stop_reason == training.STOP_EARLY and len(val) < 10
    # The best epoch is chosen only from the first stoppable epoch on, never the warm-up's epoch 0.
    assert trained.best_epoch == 1 + int(np.argmin(val[1:])) and trained.best_epoch >= 1
    assert len(val) - 1 - trained.best_epoch == 2
    assert not trained.model.training
    batches = torch.as_tensor(val_idx).split(8)
    again = training._validation_loss(trained.model, strategy, images, flipped, None, batches, None, 0)
    assert again == pytest.approx(val[trained.best_epoch], rel=1e-5)


def test_early_stopping_never_stops_before_min_epochs(data):
    images, flipped, train_idx, val_idx = _flipped(data)
    trained = training.train_model(unet(), threshold("0.5"), images, flipped, train_idx, val_idx,
                                   config(epochs=8, patience=1, min_epochs=5), seed=0, device=CPU)
    assert len(trained.history) >= 6 and trained.best_epoch >= 4


def test_without_patience_every_epoch_runs_and_the_last_is_kept(data):
    images, flipped, train_idx, val_idx = _flipped(data)
    trained = training.train_model(unet(), threshold("0.5"), images, flipped, train_idx, val_idx,
                                   config(epochs=4, patience=None), seed=0, device=CPU)
    assert len(trained.history) == 4 and trained.best_epoch == 3 and trained.stop_reason == training.STOP_ALL_EPOCHS


@pytest.mark.parametrize(("val_idx", "patients"), [(np.arange(32, 36), None), (np.arange(32, 40), 1), (np.array([], int), None)])
def test_a_validation_split_too_small_to_judge_turns_early_stopping_off(data, val_idx, patients):
    images, confidence, train_idx, _ = data
    trained = training.train_model(unet(), soft(), images, confidence, train_idx, val_idx, config(epochs=4, patience=1),
                                   seed=0, device=CPU, val_patients=patients)
    assert len(trained.history) == 4 and trained.best_epoch == 3
    assert trained.stop_reason == training.STOP_NO_VALIDATION


def test_per_image_normalization_standardizes_each_image():
    images, _ = training.dataset_tensors(disc_dataset(4), CPU, normalize="per-image")
    assert images.mean((1, 2, 3)).abs().max() < 1e-5
    assert (images.std((1, 2, 3)) - 1).abs().max() < 1e-4


def test_predict_probs_shape_range_order_and_batching(data):
    images = data[0]
    model = fit(data, epochs=1).model
    idx = np.array([3, 1, 7, 0, 5])
    probs = training.predict_probs(model, images, idx, batch_size=2)
    assert probs.shape == (5, 5, SIZE, SIZE) and probs.dtype == torch.float32
    assert not probs.requires_grad and not model.training
    assert 0 <= probs.min() and probs.max() <= 1
    whole = training.predict_probs(model, images, np.arange(8), batch_size=8)
    assert torch.allclose(probs, whole[idx], atol=1e-5)


def test_augmentation_is_seeded_and_moves_labels_with_the_image():
    images = 0.3 + 0.4 * torch.rand(16, 1, 8, 8)  # away from 0 and 1, so the gain jitter is never clipped
    confidence = images.expand(16, 5, 8, 8).clone()  # confidence = image, so a flip shows in both
    a = augment_batch(images, confidence, torch.Generator().manual_seed(1))
    b = augment_batch(images, confidence, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    aug_images, aug_conf, no_raters = a
    assert no_raters is None
    flipped = [bool(torch.equal(aug_conf[i], confidence[i].flip(-1))) for i in range(16)]
    assert 0 < sum(flipped) < 16
    for i in range(16):
        source = images[i].flip(-1) if flipped[i] else images[i]
        ratio = (aug_images[i] - aug_images[i].mean()) / (source - source.mean())
        assert torch.allclose(ratio, ratio.flatten()[0], atol=1e-3)  # gain and offset only, no spatial change
        assert torch.equal(aug_conf[i], confidence[i].flip(-1) if flipped[i] else confidence[i])
    assert aug_images.min() >= 0 and aug_images.max() <= 1
    # Rater masks move with the image, and passing them changes no draw.
    raters = torch.rand(16, 3, 5, 8, 8) < 0.5
    with_raters = augment_batch(images, confidence, torch.Generator().manual_seed(1), raters)
    assert torch.equal(with_raters[0], aug_images) and torch.equal(with_raters[1], aug_conf)
    for i in range(16):
        assert torch.equal(with_raters[2][i], raters[i].flip(-1) if flipped[i] else raters[i])
    assert not math.isclose(float((aug_images - images).abs().max()), 0.0)


class _NanLossStrategy(type(soft())):
    """The soft strategy with a loss that turns NaN: what a broken custom loss does to training."""

    name = "nan-loss"

    def loss(self, logits, target, weight):
        return super().loss(logits, target, weight) * torch.tensor(float("nan"))


def test_a_non_finite_loss_stops_training_with_one_line(data):
    from lusbench.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1: training loss nan") as info:
        fit(data, _NanLossStrategy(), epochs=2)
    assert "\n" not in str(info.value)


def test_non_finite_probabilities_are_refused(data):
    from lusbench.errors import TrainingDiverged

    images, _, _, val_idx = data
    model = unet().build(1, 5)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="non-finite probabilities"):
        training.predict_probs(model, images, val_idx, 8)


class _RecordingRaterStrategy(LabelStrategy):
    """A rater strategy that records, per batch, whether each rater mask still matches the (augmented) confidence."""

    name = "recording"
    needs_raters = True
    stochastic = True

    def __init__(self):
        self.matches = []

    def targets(self, confidence, *, raters, generator):
        levels = torch.stack([binarize(confidence, t) for t in (0.3, 0.5, 0.7)], 1)
        self.matches.append(bool(torch.equal(raters, levels)))
        return raters[:, 1].float(), None


def _rater_data(data):
    confidence = data[1]
    return torch.stack([binarize(confidence, t) for t in (0.3, 0.5, 0.7)], 1)  # (N, 3, K, H, W), as the levels


def test_rater_strategies_see_each_batchs_raters_augmented_with_it(data):
    images, confidence, train_idx, val_idx = data
    strategy = _RecordingRaterStrategy()
    training.train_model(unet(), strategy, images, confidence, train_idx, val_idx, config(epochs=2), seed=0,
                         device=CPU, raters=_rater_data(data))
    # 4 training batches and 1 validation batch per epoch; a mask not flipped with its frame would not match
    assert len(strategy.matches) == 10 and all(strategy.matches)
    with pytest.raises(ValueError, match="needs rater masks"):
        training.train_model(unet(), strategy, images, confidence, train_idx, val_idx, config(epochs=1), seed=0,
                             device=CPU)


@pytest.mark.parametrize("make", [lambda: random_rater(), lambda: stochastic_threshold("0.3", "0.7")])
def test_random_strategies_are_reproducible_from_the_seed(data, make):
    images, confidence, train_idx, val_idx = data
    runs = [training.train_model(unet(), make(), images, confidence, train_idx, val_idx, config(epochs=2), seed=seed,
                                 device=CPU, raters=_rater_data(data)) for seed in (5, 5, 6)]
    weights = [torch.cat([p.flatten() for p in r.model.parameters()]) for r in runs]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert runs[0].history[-1]["val_loss"] == runs[1].history[-1]["val_loss"]
