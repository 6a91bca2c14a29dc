"""Reference implementations timed beside mnist_jax: the seed notebook's own autograd code
(float64), and the same MLP and the same CNN in PyTorch, on CUDA where torch sees a GPU, else on
the CPU, in the benchmark's dtype and matmul precision. They need the `bench` extra."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

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


def torch_device(cuda_available: bool) -> str:
    """Where the PyTorch references run: `cuda` where torch sees a GPU, else `cpu`."""
    return "cuda" if cuda_available else "cpu"


def torch_device_here() -> str:
    """`torch_device` on this machine (ImportError without torch)."""
    import torch

    return torch_device(torch.cuda.is_available())


@contextlib.contextmanager
def _torch_numerics(torch, device: str, matmul_precision: str) -> Iterator[None]:
    """TF32 products on CUDA unless the precision is `highest` (true float32, as JAX's), restored
    afterwards; a CPU computes float32 products at every precision, as JAX's does."""
    if device != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = matmul_precision != "highest"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _parameter_dtype(torch, dtype: str):
    """The tensors' dtype for a benchmark `dtype`: float32 under bfloat16's mixed precision, where
    autocast computes the products in bfloat16 (as `Config.dtype` does)."""
    return torch.float32 if dtype == "bfloat16" else getattr(torch, dtype)


def _timed_epochs(
    torch,
    examples: int,
    batch_size: int,
    epochs: int,
    optimizer,
    batch_loss: Callable,
    device: str,
    dtype: str,
    matmul_precision: str,
    schedule=None,
) -> list[float]:
    """Seconds per epoch of an idiomatic PyTorch loop: shuffled batches, `batch_loss(rows)`
    backpropagated, an optimizer step (and a schedule step) per batch; the device synchronised
    before each clock reading."""
    synchronise = torch.cuda.synchronize if device == "cuda" else lambda: None
    mixed = dtype == "bfloat16"
    autocast = (
        (lambda: torch.autocast(device, torch.bfloat16)) if mixed else contextlib.nullcontext
    )
    seconds = []
    with _torch_numerics(torch, device, matmul_precision):
        for _ in range(epochs):
            synchronise()
            start = time.perf_counter()
            order = torch.randperm(examples, device=device)
            for i in range(0, examples, batch_size):
                with autocast():
                    loss = batch_loss(order[i : i + batch_size])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step()
            synchronise()
            seconds.append(time.perf_counter() - start)
    return seconds


def torch_epoch_seconds(
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = 3,
    batch_size: int = 256,
    sizes=(784, 200, 100, 10),
    device: str = "cpu",
    dtype: str = "float32",
    matmul_precision: str = "highest",
) -> list[float]:
    """Seconds per epoch of an idiomatic PyTorch loop on `device`: same MLP, loss, Adam and
    shuffling."""
    import torch

    torch.manual_seed(0)
    tensors = _parameter_dtype(torch, dtype)
    X = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)
    X = X.to(device, tensors)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    layers = [torch.nn.Linear(m, n) for m, n in zip(sizes[:-1], sizes[1:], strict=True)]
    model = torch.nn.Sequential(
        *[m for layer in layers[:-1] for m in (layer, torch.nn.Tanh())], layers[-1]
    ).to(device, tensors)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-8)
    return _timed_epochs(
        torch,
        len(y),
        batch_size,
        epochs,
        optimizer,
        lambda rows: torch.nn.functional.cross_entropy(model(X[rows]), y[rows], reduction="sum"),
        device,
        dtype,
        matmul_precision,
    )


def torch_cnn_epoch_seconds(
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    config,
    device: str = "cpu",
    dtype: str = "float32",
    matmul_precision: str = "highest",
) -> list[float]:
    """Seconds per epoch of an idiomatic PyTorch loop on `device` over the configurable CNN of
    `config` (the `cnn` preset: Flax's network) with its recipe: SGD with `config.momentum` at
    `config.learning_rate` decayed by a cosine over the epochs, `config.batch_size`, the mean loss,
    shuffled batches. Tensors are channels-last (NHWC in memory, PyTorch's fast CPU layout), and
    on a CPU PyTorch uses as many threads as JAX (every core)."""
    import os

    import torch

    torch.manual_seed(0)
    if device == "cpu":
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
    tensors = _parameter_dtype(torch, dtype)
    model = torch.nn.Sequential(
        *layers,
        torch.nn.Flatten(),
        torch.nn.Linear(side * side * channels[-1], config.cnn_dense),
        torch.nn.ReLU(),
        torch.nn.Linear(config.cnn_dense, 10),
    ).to(device, tensors, memory_format=torch.channels_last)
    X = torch.from_numpy(images.reshape(len(images), 1, 28, 28).astype(np.float32) / 255)
    X = X.to(device, tensors, memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    steps = epochs * -(-len(y) // config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum or 0
    )
    return _timed_epochs(
        torch,
        len(y),
        config.batch_size,
        epochs,
        optimizer,
        lambda rows: torch.nn.functional.cross_entropy(
            model(X[rows].contiguous(memory_format=torch.channels_last)), y[rows]
        ),
        device,
        dtype,
        matmul_precision,
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps),
    )
