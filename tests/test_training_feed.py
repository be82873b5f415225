"""The harness's training feed changes how batches arrive, never what the model learns from them."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from aebench import backends, scenarios  # noqa: E402
from aebench.backends.tensorflow import TensorFlowBackend  # noqa: E402
from aebench.models import build_autoencoder  # noqa: E402


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 28, 28, 1), dtype=np.float32)


def test_in_order_feed_trains_exactly_like_plain_fit() -> None:
    # 300 = two full batches of 128 and a partial one, as in a real epoch. Binary images and a high learning rate make
    # the batch order matter: shuffled, the same two epochs end 0.1% away; in order, the losses are bit for bit equal.
    clean = (_images(300, 0) > 0.7).astype(np.float32)
    noisy = np.clip(clean + 0.2 * np.random.default_rng(1).standard_normal(clean.shape, dtype=np.float32), 0, 1)
    losses = []
    for harness in (False, True):
        model = build_autoencoder("conv", seed=0)
        scenarios.compile_autoencoder(model, learning_rate=1e-2, jit_compile=False)
        if harness:
            training = scenarios.train(model, noisy, clean, batch_size=128, epochs=2, seed=0, shuffle=False)
            assert "in order" in training.feed or "numpy" in training.feed
            assert len(training.epoch_seconds) == 2
        else:
            model.fit(noisy, clean, batch_size=128, epochs=2, shuffle=False, verbose=0)
        losses.append(float(model.evaluate(noisy, clean, batch_size=300, verbose=0)))
    plain, ours = losses
    assert ours == pytest.approx(plain, rel=1e-5)


def test_shuffled_feed_reorders_batches_but_keeps_every_image() -> None:
    backend = backends.current()
    if not isinstance(backend, TensorFlowBackend):
        pytest.skip("the tf.data pipeline exists on the tensorflow backend only")
    images = np.arange(10, dtype=np.float32).reshape(10, 1)
    feed, _ = backend.training_feed(images, images, batch_size=4, seed=3)
    epoch = np.concatenate([x.numpy() for x, _ in feed["x"]]).ravel()
    assert sorted(epoch) == list(range(10)) and list(epoch) != list(range(10))
    in_order, _ = backend.training_feed(images, images, batch_size=4, seed=3, shuffle=False)
    assert [len(x) for x, _ in in_order["x"]] == [4, 4, 2]
    assert np.concatenate([x.numpy() for x, _ in in_order["x"]]).ravel().tolist() == list(range(10))


def test_a_checkpointed_run_reports_each_save_and_restores_where_it_stopped(tmp_path) -> None:
    """Keras' backup saves after every epoch; each save's seconds reach ``on_checkpoint_saved`` (the quality clock
    leaves them out of the training time). A run stopped after its first epoch resumes at the second."""
    images = _images(64, 2)
    saves: list[float] = []
    model = build_autoencoder("undercomplete", seed=0)
    scenarios.compile_autoencoder(model, learning_rate=1e-3, jit_compile=False)

    class Killed(Exception):
        pass

    class StopAfterTheFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            if epoch == 0:
                raise Killed  # as a killed run stops: its epoch-0 backup is on disk

    with pytest.raises(Killed):
        scenarios.train(model, images, images, batch_size=32, epochs=2, seed=0, checkpoint_dir=str(tmp_path / "ck"),
                        callbacks=[StopAfterTheFirstEpoch()], on_checkpoint_saved=saves.append)
    assert len(saves) == 1 and saves[0] > 0
    resumed = scenarios.train(model, images, images, batch_size=32, epochs=2, seed=0,
                              checkpoint_dir=str(tmp_path / "ck"), on_checkpoint_saved=saves.append)
    assert len(resumed.epoch_seconds) == 1  # only the epoch left
    assert len(saves) == 2 and not (tmp_path / "ck").exists()  # the finished run deleted its backup
