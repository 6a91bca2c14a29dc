"""When and how a process joins JAX's distributed runtime under SLURM, checked on fake SLURM
environments (no scheduler needed) against JAX's own cluster detection."""

import inspect
import os
import signal
import subprocess
import sys

import jax
import pytest
from jax._src.clusters import ClusterEnv, SlurmCluster, cluster

from benchmarks.multihost import free_port
from mnist_jax.cli import build_parser
from mnist_jax.errors import ConfigError
from mnist_jax.runtime import distributed
from mnist_jax.runtime.distributed import initialize_distributed
from tests.helpers import MNIST_JAX

LAUNCHER_VARIABLES = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_COORDINATOR_PORT",
    "JAX_LOCAL_DEVICE_IDS",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_MCA_orte_hnp_uri",
    "TPU_WORKER_HOSTNAMES",
)


def slurm_step(tasks: int, nodes: int, process: int = 0, nodelist: str = "gpu[01-04]") -> dict:
    """The variables srun gives task `process` of a job step, its tasks spread evenly."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NODELIST": nodelist,
        "SLURM_STEP_NUM_NODES": str(nodes),
        "SLURM_NTASKS": str(tasks),
        "SLURM_PROCID": str(process),
        "SLURM_LOCALID": str(process % (tasks // nodes)),
    }


def no_launcher() -> dict:
    """This process's environment without any launcher's variables, for a child process."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCHER_VARIABLES and not k.startswith("SLURM_")
    }


@pytest.fixture
def environment(monkeypatch):
    """Sets the process's environment to exactly the launcher variables given (none of the
    machine's own); records calls to jax.distributed.initialize instead of making them."""
    calls = []
    for name in [*LAUNCHER_VARIABLES, *(n for n in os.environ if n.startswith("SLURM_"))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    sigterm = signal.getsignal(signal.SIGTERM)  # a joined process replaces it

    def set_to(variables: dict) -> list[dict]:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return calls

    yield set_to
    signal.signal(signal.SIGTERM, sigterm)


def test_the_default_timeout_is_jax_own():
    jax_default = (
        inspect.signature(jax.distributed.initialize).parameters["initialization_timeout"].default
    )
    ours = inspect.signature(initialize_distributed).parameters["timeout_seconds"].default
    flag = build_parser().parse_args(["train"]).distributed_timeout
    assert jax_default == ours == flag == distributed.DEFAULT_TIMEOUT_SECONDS


def test_no_launcher_means_one_process(environment):
    calls = environment({})
    assert initialize_distributed(None, None, None) is False
    assert calls == []


@pytest.mark.parametrize(
    "variables",
    [slurm_step(tasks=1, nodes=1), {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1"}],
    ids=["srun", "salloc-shell"],
)
def test_a_one_task_slurm_job_runs_as_one_process(environment, variables):
    calls = environment(variables)
    assert initialize_distributed(None, None, None) is False
    assert calls == []


@pytest.mark.parametrize(
    "variables, missing",
    [
        *(
            ({k: v for k, v in slurm_step(tasks=4, nodes=2).items() if k != name}, f"{name} is")
            for name in ("SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
        ),
        (
            {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_NNODES": "2"},
            "SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID are",
        ),
    ],
)
def test_a_partial_slurm_environment_is_refused_in_one_line(environment, variables, missing):
    calls = environment(variables)
    assert not SlurmCluster.is_env_present()  # JAX itself would not see a SLURM job step
    with pytest.raises(ConfigError) as raised:
        initialize_distributed(None, None, None)
    message = str(raised.value)
    assert message.startswith(f"SLURM_JOB_ID is set but {missing} not: ")
    assert "not a job step; launch with `srun mnist-jax ...`" in message
    assert "unset SLURM_JOB_ID" in message and "\n" not in message
    assert calls == []


@pytest.mark.parametrize(
    "variables, flags, every_device",
    [
        (slurm_step(tasks=8, nodes=2, process=5), (None, None, None), False),  # one per GPU
        (slurm_step(tasks=2, nodes=2, process=1), (None, None, None), True),  # one per node
        (slurm_step(tasks=2, nodes=2, process=0), ("gpu01:1234", 2, 0), True),  # flags too
        ({**slurm_step(tasks=2, nodes=2), "JAX_LOCAL_DEVICE_IDS": "1"}, (None,) * 3, False),
        ({**slurm_step(tasks=2, nodes=2), "OMPI_COMM_WORLD_SIZE": "2"}, (None,) * 3, False),
    ],
    ids=["task-per-gpu", "task-per-node", "task-per-node-flags", "user-device-ids", "open-mpi"],
)
def test_a_slurm_job_step_joins_the_runtime(
    environment, monkeypatch, variables, flags, every_device
):
    calls = environment(variables)
    monkeypatch.setattr(cluster, "running_in_cloud_tpu_vm", False)  # a GPU cluster's node
    assert SlurmCluster.is_env_present()
    assert initialize_distributed(*flags) is True
    [kwargs] = calls
    assert kwargs["initialization_timeout"] == 300
    assert ("local_device_ids" in kwargs) == every_device
    # What JAX makes of the call: the launcher's layout, and which local devices it keeps.
    address, processes, process, local_ids = ClusterEnv.auto_detect_unset_distributed_params(
        kwargs.get("coordinator_address"),
        kwargs.get("num_processes"),
        kwargs.get("process_id"),
        kwargs.get("local_device_ids"),
        None,
        kwargs["initialization_timeout"],
    )
    assert address.startswith("gpu01:")
    assert (processes, process) == (int(variables["SLURM_NTASKS"]), int(variables["SLURM_PROCID"]))
    if every_device:
        assert local_ids == []  # JAX restricts nothing for a falsy list (checked below)
    elif "JAX_LOCAL_DEVICE_IDS" not in variables:
        assert local_ids == [int(variables["SLURM_LOCALID"])]


def test_another_launcher_inside_a_slurm_allocation_is_left_to_jax(environment):
    calls = environment({"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "OMPI_COMM_WORLD_SIZE": "2"})
    assert initialize_distributed(None, None, None) is True
    assert calls == [{"initialization_timeout": 300}]


@pytest.mark.parametrize("nodes, visible", [(1, ["0", "1"]), (2, ["all", "all"])])
def test_slurm_tasks_see_their_devices_in_jax(nodes, visible):
    """Two real processes join the runtime on this machine under a fake two-task SLURM step of
    a GPU cluster: one task per node leaves every device visible, two on one node get one each."""
    port = str(free_port())
    show = (
        "import jax; from jax._src.xla_bridge import CUDA_VISIBLE_DEVICES; "
        "from jax._src.clusters import cluster; cluster.running_in_cloud_tpu_vm = False; "
        "from mnist_jax.runtime.distributed import initialize_distributed; "
        "assert initialize_distributed(None, None, None, 60); "
        "print(CUDA_VISIBLE_DEVICES.value, jax.process_count())"  # what the GPU client reads
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", show],
            env={
                **no_launcher(),
                **slurm_step(tasks=2, nodes=nodes, process=i, nodelist="localhost"),
                "JAX_COORDINATOR_PORT": port,
                "JAX_PLATFORMS": "cpu",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][1][-2000:]
    assert [out.split() for out, _ in outputs] == [[v, "2"] for v in visible]


def test_the_command_refuses_a_shell_outside_a_job_step():
    proc = subprocess.run(
        [*MNIST_JAX, "train"],
        env={**no_launcher(), "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "SLURM_JOB_ID is set but SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID are" in line
