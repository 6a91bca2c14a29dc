"""The losses every model trains on: log-softmax, summed negative log-likelihood, smoothed
labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import logsumexp

from mnist_jax.config import is_on


def log_softmax(scores: jax.Array) -> jax.Array:
    """Log-probabilities from scores, as the seed computed them."""
    return scores - logsumexp(scores, axis=1, keepdims=True)


def summed_nll(
    log_probs: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Summed negative log-likelihood of integer `labels`; rows with mask False count nothing."""
    picked = jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    return -jnp.sum(picked if mask is None else jnp.where(mask, picked, 0))


def smoothed_nll(
    log_probs: jax.Array, labels: jax.Array, mask: jax.Array, smoothing: float
) -> jax.Array:
    """Summed cross-entropy against one-hot targets mixed with the uniform distribution:
    `(1 - smoothing) * onehot + smoothing / classes`; with smoothing 0, `summed_nll`."""
    if not is_on(smoothing):
        return summed_nll(log_probs, labels, mask)
    one_hot = jax.nn.one_hot(labels, log_probs.shape[1], dtype=log_probs.dtype)
    targets = optax.smooth_labels(one_hot, smoothing)
    return -jnp.sum(jnp.where(mask[:, None], targets * log_probs, 0))
