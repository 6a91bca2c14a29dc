"""The code's shape: imports flow one way (in the order of the README's module table), only
the tfds and tf.data modules load TensorFlow, both data paths implement one interface over the bound steps."""

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mnist_jax import Config, data, parallel
from mnist_jax.pipelines import PIPELINES, Pipeline, make_pipeline
from mnist_jax.steps import make_steps

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mnist_jax"


def readme_modules() -> list[str]:
    """The modules of the README's "How it is built" table, in its order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)\.py` \|", section, flags=re.MULTILINE)


def package_imports(module: str) -> set[str]:
    """The package's modules that `module` imports, at the top or inside functions."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "mnist_jax":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_jax."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mnist_jax.")}
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
GRAPH = {module: package_imports(module) for module in MODULES}


def test_the_readme_table_lists_every_module_once():
    assert sorted(readme_modules()) == MODULES


def test_imports_flow_one_way_in_the_readme_order():
    rank = {module: i for i, module in enumerate(readme_modules())}
    backwards = [f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
                 if rank[target] >= rank[module]]
    assert backwards == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of `graph` meets, as the path around it."""
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles():
    assert find_cycles(GRAPH) == []
    # The finder can fail: the same graph with one import turned back makes a cycle.
    assert find_cycles({**GRAPH, "config": {"cli"}})


HEAVY = ["mnist_jax.tfds_source", "mnist_jax.streams"]  # TensorFlow: preparation and the stream path
LIGHT = ["mnist_jax"] + [f"mnist_jax.{m}" for m in MODULES if f"mnist_jax.{m}" not in HEAVY]


def loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level packages in sys.modules after importing `modules` in a fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_light_modules_load_no_tensorflow():
    loaded = loaded_after_import(LIGHT)
    assert "mnist_jax" in loaded and "jax" in loaded
    assert not {"tensorflow", "tensorflow_datasets"} & loaded


@pytest.mark.parametrize("module", HEAVY)
def test_the_tensorflow_modules_do_load_it(module):
    # The check above can tell: these modules bring TensorFlow in.
    assert "tensorflow" in loaded_after_import([module])


def test_both_data_paths_have_the_protocol_methods():
    for name, cls in PIPELINES.items():
        for method in ("train_epoch", "evaluate"):
            assert inspect.signature(getattr(cls, method)) == inspect.signature(getattr(Pipeline, method)), (name,
                                                                                                            method)
        assert list(inspect.signature(cls).parameters) == list(inspect.signature(make_pipeline).parameters)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_data_paths_call_the_steps_they_are_given(data_dir, pipeline):
    config = Config(layer_sizes=(784, 16, 10), batch_size=32, eval_batch_size=64, batches_per_chunk=4,
                    pipeline=pipeline, data_dir=data_dir)
    steps = make_steps(config)
    doubled = steps._replace(eval_step=lambda params, batch: tuple(2 * x for x in steps.eval_step(params, batch)))
    shares = {s: data.load_share(s, data_dir) for s in ("train", "test")}
    mesh = parallel.make_mesh(1)
    state = parallel.replicate(steps.init(config.seed), mesh)
    plain, twice = (make_pipeline(config, s, shares, state, mesh).evaluate(state.params)["test"]
                    for s in (steps, doubled))
    assert int(twice[0]) == 2 * int(plain[0])
    np.testing.assert_allclose(float(twice[1]), 2 * float(plain[1]), rtol=1e-6)
    assert jax.tree.structure(state) == jax.tree.structure(steps.init(0))
