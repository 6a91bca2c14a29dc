"""`python -m benchmarks.run [flags]`: `mnist-jax bench` writing into benchmarks/results, the
results the READMEs render their benchmark tables from (`mnist-jax bench --help` lists the
flags)."""

import sys

from mnist_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--out", "benchmarks/results", *sys.argv[1:]]))
