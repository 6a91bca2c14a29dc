"""TensorBoard event files: per epoch every split's accuracy and loss and the epoch's seconds, per
step the training loss and the learning rate; one stream per model (a run's, or each of a sweep's).

The files are written here, in TensorBoard's format (TFRecord frames of `Event` protocol
buffers holding scalar summaries), in some forty lines: TensorFlow's writer would load
TensorFlow (seconds of start-up) and tensorboardX loads PyTorch where it is installed.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax.config import Config, optimizer_by_name, settings_label, steps_per_epoch
from mnist_jax.optimizers import learning_rate_schedule


def learning_rates(configs: Sequence[Config], train_size: int) -> list[np.ndarray | None]:
    """Each config's learning rate at every step of its run (None for an optimizer not built by
    name, whose rate only its factory knows), each distinct schedule evaluated once, all in one
    compiled program."""
    distinct = list(dict.fromkeys(configs))  # a sweep's seeds share their config
    schedules = [
        learning_rate_schedule(c, train_size) if optimizer_by_name(c) else None for c in distinct
    ]
    shaped = [s for s in schedules if callable(s)]
    steps = np.arange(max(c.num_epochs * steps_per_epoch(c, train_size) for c in distinct))
    curves = iter(
        np.asarray(jax.jit(lambda t: jnp.stack([s(t) for s in shaped]))(steps)) if shaped else []
    )
    rates = [
        None if s is None else next(curves) if callable(s) else np.full(len(steps), s, np.float32)
        for s in schedules
    ]
    return [rates[distinct.index(c)] for c in configs]


def stream_name(settings: dict, seed: int | None = None) -> str:
    """A model's folder: its grid cell's settings (`name=value`, joined by `_`), then `seed-N`."""
    cell = settings_label(settings).replace(" ", "_").replace("/", "-")
    return os.path.join(cell, f"seed-{seed}" if seed is not None else "")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord frames."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord(data: bytes) -> bytes:
    """One TFRecord frame: length, its checksum, the data, its checksum."""
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _message_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def event(wall_time: float, step: int = 0, tag: str | None = None, value: float = 0.0) -> bytes:
    """An `Event` protocol buffer: the file-version header without a tag, else one scalar summary
    (Event: 1 wall_time, 2 step, 3 file_version, 5 summary; Summary.Value: 1 tag, 2
    simple_value)."""
    head = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if tag is None:
        return head + _message_field(3, b"brain.Event:2")
    scalar = _message_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", value))
    return head + _message_field(5, _message_field(1, scalar))


class EventFile:
    """An event file in `folder`, named as TensorBoard looks for them; scalars appended, flushed by
    `flush`."""

    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.file = open(os.path.join(folder, name), "ab")  # noqa: SIM115 (closed by close())
        self.file.write(tfrecord(event(time.time())))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.file.write(tfrecord(event(time.time(), step, tag, value)))

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TrainingEvents:
    """Event files for models trained together (so with one batch size), in `folder/stream` for
    each name in `streams` (`""`: `folder` itself), each with its config's learning rates."""

    def __init__(
        self, folder: str, streams: Sequence[str], configs: Sequence[Config], train_size: int
    ):
        self.rates = learning_rates(configs, train_size)
        self.steps_per_epoch = steps_per_epoch(configs[0], train_size)
        self.writers = [EventFile(os.path.join(folder, stream)) for stream in streams]

    def metrics(
        self, epoch: int, scores: Sequence[dict[str, float]], seconds: float | None = None
    ) -> None:
        """Model i's metrics `scores[i]` (`<split>_accuracy`, `<split>_loss`) after `epoch` (0:
        before training), and the epoch's training seconds; the epoch is the events' step."""
        for writer, model_scores in zip(self.writers, scores, strict=True):
            for name, value in model_scores.items():
                split, _, metric = name.rpartition("_")
                if metric in ("accuracy", "loss") and value is not None:
                    writer.scalar(f"{metric}/{split}", float(value), epoch)
            if seconds is not None:
                writer.scalar("epoch/seconds", seconds, epoch)
            writer.flush()

    def steps(self, epoch: int, first_step: int, losses: np.ndarray) -> None:
        """Model i's training losses `losses[i]` of epoch `epoch`'s steps from `first_step`
        (0-based), with the learning rate at each; the optimizer step, from 1, is the events'
        step."""
        first_step += (epoch - 1) * self.steps_per_epoch
        for writer, rates, model_losses in zip(self.writers, self.rates, losses, strict=True):
            for step, loss in enumerate(model_losses, start=first_step + 1):
                writer.scalar("step/loss", float(loss), step)
                if rates is not None and step <= len(rates):
                    writer.scalar("step/learning_rate", float(rates[step - 1]), step)
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    def __enter__(self) -> TrainingEvents:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
