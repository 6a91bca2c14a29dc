"""The code's shape: the module table of docs/architecture.md against the package, imports that
flow one way (modules and subpackages alike) with no cycle, only the data's TensorFlow modules
loading it, both data paths implementing one interface over the steps they are given."""

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.pipelines import PIPELINES, Pipeline, make_pipeline
from mnist_jax.runtime import parallel
from mnist_jax.steps import make_steps
from tests.helpers import child_env, child_platform, run_in_a_child, train_as_a_child

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mnist_jax"
MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))


def table_modules() -> list[str]:
    """The modules of the table in docs/architecture.md, in its order."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    table = page.split("| module | concern |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([\w/]+\.py)` \|", table, flags=re.MULTILINE)


def resolve(dotted: str) -> str | None:
    """The package file of a dotted module name (`mnist_jax.data.idx` -> `data/idx.py`), or
    None."""
    parts = dotted.split(".")[1:]
    for candidate in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
        if candidate in MODULES:
            return candidate
    return None


def package_imports(module: str) -> set[str]:
    """The package's modules that `module` imports, at the top or inside functions: a name imported
    from a package that is one of its submodules counts as that submodule."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / module).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mnist_jax":
            for alias in node.names:
                target = resolve(f"{node.module}.{alias.name}") or resolve(node.module)
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names if a.name.startswith("mnist_jax.")}
    return found - {None, module}


GRAPH = {module: package_imports(module) for module in MODULES}


def test_the_table_lists_every_module_once():
    assert sorted(table_modules()) == MODULES
    assert len(table_modules()) == len(set(table_modules()))


def test_imports_flow_one_way_in_the_tables_order():
    rank = {module: i for i, module in enumerate(table_modules())}
    backwards = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if rank[target] >= rank[module]
    ]
    assert backwards == []


def test_each_subpackage_is_one_block_of_the_table():
    packages = [module.split("/")[0] for module in table_modules() if "/" in module]
    blocks = [
        package for i, package in enumerate(packages) if i == 0 or packages[i - 1] != package
    ]
    assert len(blocks) == len(set(blocks)), blocks


def test_the_import_resolver_sees_submodules_and_packages():
    # The checks above are only as good as the graph: spot-check it against imports read by eye.
    assert {"data/array_file.py", "errors.py"} <= GRAPH["data/dataset.py"]
    assert "data/tfds_source.py" in GRAPH["data/dataset.py"]  # imported inside a function
    assert "data/__init__.py" in GRAPH["training.py"]  # `from mnist_jax import data`
    assert "reporters/__init__.py" in GRAPH["training.py"]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of `graph` meets, as the path around it."""
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
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
    assert find_cycles({**GRAPH, "config.py": {"cli.py"}})


def dotted(module: str) -> str:
    return "mnist_jax." + module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


# TensorFlow: preparation and the stream path
HEAVY = ["mnist_jax.data.tfds_source", "mnist_jax.data.streams"]
LIGHT = ["mnist_jax"] + [
    dotted(m) for m in MODULES if m != "__init__.py" and dotted(m) not in HEAVY
]


def loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level packages in sys.modules after importing `modules` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    proc = run_in_a_child([sys.executable, "-c", code], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_light_modules_load_no_tensorflow_flax_or_equinox():
    loaded = loaded_after_import(LIGHT)
    assert "mnist_jax" in loaded and "jax" in loaded
    assert not {"tensorflow", "tensorflow_datasets", "flax", "equinox"} & loaded


def test_the_import_check_sees_flax_and_equinox():
    # The check above can tell: a user's module of each framework brings it in.
    assert {"flax", "equinox"} <= loaded_after_import(["tests.framework_models"])


@pytest.mark.parametrize("module", HEAVY)
def test_the_tensorflow_modules_do_load_it(module):
    # The check above can tell: these modules bring TensorFlow in.
    assert "tensorflow" in loaded_after_import([module])


def test_both_data_paths_have_the_protocol_methods():
    for name, cls in PIPELINES.items():
        for method in ("train_epoch", "evaluate"):
            assert inspect.signature(getattr(cls, method)) == inspect.signature(
                getattr(Pipeline, method)
            ), (name, method)
        assert list(inspect.signature(cls).parameters) == list(
            inspect.signature(make_pipeline).parameters
        )


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_data_paths_call_the_steps_they_are_given(data_dir, tiny_config, pipeline):
    config = tiny_config.replace(pipeline=pipeline)
    steps = make_steps(config)
    doubled = steps._replace(
        eval_step=lambda variables, batch: tuple(2 * x for x in steps.eval_step(variables, batch))
    )
    shares = data.load(data_dir)
    mesh = parallel.make_mesh(1)
    state = parallel.replicate(steps.init(config.seed), mesh)
    plain, twice = (
        make_pipeline(config, s, shares, state, mesh).evaluate(state.variables)["test"]
        for s in (steps, doubled)
    )
    assert int(twice[0]) == 2 * int(plain[0])
    np.testing.assert_allclose(float(twice[1]), 2 * float(plain[1]), rtol=1e-6)
    assert jax.tree.structure(state) == jax.tree.structure(steps.init(0))


def unbounded_waits(path: Path) -> list[str]:
    """Calls in a file that start or wait for a subprocess with no timeout: one could hang the
    suite."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, name = getattr(node.func.value, "id", ""), node.func.attr
        starts = owner == "subprocess" and name in ("run", "call", "check_call", "check_output")
        waits = name in ("wait", "communicate") and not node.args and owner != "subprocess"
        if (starts or waits) and not any(keyword.arg == "timeout" for keyword in node.keywords):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_every_subprocess_the_tests_wait_for_has_a_timeout():
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert [where for path in files for where in unbounded_waits(path)] == []


def test_the_timeout_scan_finds_a_call_without_one(tmp_path):
    path = tmp_path / "test_sample.py"
    path.write_text(
        "import subprocess\nsubprocess.run(['true'])\nproc.wait()\n"
        "subprocess.run(['true'], timeout=5)\n"
    )
    assert unbounded_waits(path) == ["test_sample.py:2", "test_sample.py:3"]


# The calls of `subprocess` that start a process.
STARTS = ("run", "call", "check_call", "check_output", "Popen")


def unpinned_starts(path: Path) -> list[str]:
    """Calls in a file that start a process with no environment given: one that could open JAX's
    default platform beside this process (see `tests.helpers.child_env`). A program the call names
    by a literal (`["git", ...]`, `["pdflatex", ...]`) runs no JAX."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and getattr(node.func.value, "id", "") == "subprocess"
            and node.func.attr in STARTS
        ):
            continue
        command = node.args[0] if node.args else None
        named = (
            isinstance(command, ast.List)
            and bool(command.elts)
            and isinstance(command.elts[0], ast.Constant)
        )
        if not named and not any(keyword.arg == "env" for keyword in node.keywords):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_every_process_the_tests_start_is_given_its_environment():
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert [where for path in files for where in unpinned_starts(path)] == []


def test_the_environment_scan_finds_a_start_without_one(tmp_path):
    path = tmp_path / "test_sample.py"
    path.write_text(
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'pass'], timeout=5)\n"
        "subprocess.Popen(command)\n"
        "subprocess.run(['git', 'status'], timeout=5)\n"
        "subprocess.Popen(command, env=env)\n"
    )
    assert unpinned_starts(path) == ["test_sample.py:2", "test_sample.py:3"]


@pytest.mark.parametrize(
    "default, platform, platforms",
    [
        ("cpu", "cpu", "cpu"),
        ("cuda", "cuda", "cuda,cpu"),  # several processes share a GPU
        ("rocm", "rocm", "rocm,cpu"),
        ("tpu", "cpu", "cpu"),  # the TPU is this process's: the others take the CPU
    ],
)
def test_the_processes_the_tests_start_are_pinned_where_they_may_run(default, platform, platforms):
    assert child_platform(default) == platform
    env = child_env(default, STOP_SIGNAL="SIGTERM")
    assert env["JAX_PLATFORMS"] == platforms and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["STOP_SIGNAL"] == "SIGTERM" and env["PATH"] == os.environ["PATH"]


def test_a_started_process_and_a_run_trained_as_one_share_a_platform(tiny_config):
    proc = run_in_a_child(
        [sys.executable, "-c", "from tests.helpers import default_platform as d; print(d())"],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [child_platform()]
    result = train_as_a_child(tiny_config.replace(num_epochs=1))
    assert result.config.platform == child_platform()
    assert all(
        leaf.devices() <= set(jax.devices(child_platform()))
        for leaf in jax.tree.leaves(result.params)
    )


@pytest.mark.parametrize(
    "platforms, plugins, libtpu, workers",
    [
        ("", [], None, 2),  # CPU only: two workers
        ("", ["cuda12"], None, 0),  # a GPU's plugin: one process
        ("", [], "libtpu", 0),  # a TPU's library: one process
        ("cpu", ["cuda12"], "libtpu", 2),  # told to use the CPU: two workers whatever is installed
    ],
)
def test_the_suite_takes_two_workers_only_without_an_accelerator(
    monkeypatch, platforms, plugins, libtpu, workers
):
    from tests import conftest

    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    monkeypatch.setattr(
        conftest, "entry_points", lambda group: plugins if group == "jax_plugins" else []
    )
    monkeypatch.setattr(
        conftest.importlib.util, "find_spec", lambda name: libtpu if name == "libtpu" else None
    )
    monkeypatch.setattr(conftest.os, "cpu_count", lambda: 16)
    assert conftest.pytest_xdist_auto_num_workers(None) == workers


def test_no_file_of_the_package_or_tests_is_ignored_by_git():
    """A .gitignore pattern meant for the commands' output folders (runs/, bench/, report/) must
    not hide the subpackages of the same names from a commit."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    files = [
        str(path.relative_to(ROOT))
        for folder in ("mnist_jax", "tests", "docs", "benchmarks")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(files),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode == 128:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    assert proc.stdout.split() == []
