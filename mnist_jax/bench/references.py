"""Reference implementations timed beside mnist_jax: the seed notebook's own autograd code
(float64), and the same MLP and the same CNN in PyTorch on the CPU (float32). They need the
`bench` extra."""

from __future__ import annotations

import time

import numpy as np

from mnist_jax.config import cnn_feature_side


def autograd_epoch_seconds(
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = 1,
    batch_size: int = 256,
    sizes=(784, 200, 100, 10),
) -> list[float]:
    """Seconds per epoch of the seed notebook's training code, run as it was written."""
    import autograd.numpy as anp
    from autograd import grad
    from autograd.misc.optimizers import adam
    from autograd.scipy.special import logsumexp

    X = images.reshape(len(images), -1) / images.max()
    y = np.eye(10)[labels]

    def predict(parameters, X):
        for W, b in parameters:
            y_hat = anp.dot(X, W) + b
            X = anp.tanh(y_hat)
        return y_hat - logsumexp(y_hat, axis=1, keepdims=True)

    def loss(parameters, X, y):
        return -anp.sum(y * predict(parameters, X))

    prng = np.random.RandomState(42)
    parameters = [
        (0.1 * prng.randn(m, n), 0.1 * prng.randn(n))
        for m, n in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    n_batches = int(np.ceil(len(X) / batch_size))

    def objective(parameters, it):
        idx = slice((it % n_batches) * batch_size, (it % n_batches + 1) * batch_size)
        return loss(parameters, X[idx], y[idx])

    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        parameters = adam(grad(objective), parameters, num_iters=n_batches, step_size=0.001)
        seconds.append(time.perf_counter() - start)
    return seconds


def torch_epoch_seconds(
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = 3,
    batch_size: int = 256,
    sizes=(784, 200, 100, 10),
) -> list[float]:
    """Seconds per epoch of an idiomatic PyTorch CPU loop: same MLP, loss, Adam and shuffling."""
    import torch

    torch.manual_seed(0)
    X = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)
    y = torch.from_numpy(labels.astype(np.int64))
    layers = [torch.nn.Linear(m, n) for m, n in zip(sizes[:-1], sizes[1:], strict=True)]
    model = torch.nn.Sequential(
        *[m for layer in layers[:-1] for m in (layer, torch.nn.Tanh())], layers[-1]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-8)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            rows = order[i : i + batch_size]
            batch_loss = torch.nn.functional.cross_entropy(
                model(X[rows]), y[rows], reduction="sum"
            )
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def torch_cnn_epoch_seconds(
    images: np.ndarray, labels: np.ndarray, epochs: int, config
) -> list[float]:
    """Seconds per epoch of an idiomatic PyTorch CPU loop over the configurable CNN of `config`
    (the `cnn` preset: Flax's network) with its recipe: SGD with `config.momentum` at
    `config.learning_rate` decayed by a cosine over the epochs, `config.batch_size`, the mean loss,
    shuffled batches. Tensors are channels-last (NHWC in memory, PyTorch's fast CPU layout), and
    PyTorch uses as many threads as JAX (every core)."""
    import os

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    pool = torch.nn.AvgPool2d(2) if config.cnn_pooling == "avg" else torch.nn.MaxPool2d(2)
    channels, side = (1, *config.cnn_channels), cnn_feature_side(config)
    layers = [
        layer
        for kernel, inputs, out in zip(
            config.cnn_kernels, channels[:-1], channels[1:], strict=True
        )
        for layer in (
            torch.nn.Conv2d(inputs, out, kernel, padding=config.cnn_padding),
            torch.nn.ReLU(),
            pool,
        )
    ]
    model = torch.nn.Sequential(
        *layers,
        torch.nn.Flatten(),
        torch.nn.Linear(side * side * channels[-1], config.cnn_dense),
        torch.nn.ReLU(),
        torch.nn.Linear(config.cnn_dense, 10),
    )
    model = model.to(memory_format=torch.channels_last)
    X = torch.from_numpy(images.reshape(len(images), 1, 28, 28).astype(np.float32) / 255)
    X = X.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype(np.int64))
    steps = epochs * -(-len(y) // config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum or 0
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(y))
        for i in range(0, len(y), config.batch_size):
            rows = order[i : i + config.batch_size]
            batch = X[rows].contiguous(memory_format=torch.channels_last)
            batch_loss = torch.nn.functional.cross_entropy(model(batch), y[rows])
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            schedule.step()
        seconds.append(time.perf_counter() - start)
    return seconds
