"""The Flax NNX, Flax Linen and Equinox CNNs of docs/your-own-model.md (BatchNorm and dropout,
each written with its framework's own layers, as its users write it), read from the page's
`# my_models.py: ...` code blocks, so that the tests train exactly what the page shows. Their
factories load by import path like a user's module: `tests.framework_models:nnx_cnn`,
`linen_cnn` and `equinox_cnn`."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "your-own-model.md"
BLOCKS = re.findall(r"```python\n(# my_models\.py: .*?)```", PAGE.read_text(), flags=re.DOTALL)
for block in BLOCKS:
    exec(compile(block, f"{PAGE}:{block.splitlines()[0]}", "exec"))  # noqa: S102
