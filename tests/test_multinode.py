"""Two "nodes" of one CPU process each on 127.0.0.1, started with torchrun exactly as docs/training.md shows.

Each node is its own ``torchrun --nnodes 2 --nproc_per_node 1 --node_rank R --master_addr 127.0.0.1 --master_port P``
running ``python -m recipes.function_mlp fit --trainer.num_nodes 2 --trainer.devices 1 --trainer.strategy ddp``
through the recipe's real command line. Two claims: the two nodes train the weights one process trains on the same
global batches, and after one node is killed with SIGKILL the other fails within seconds and a relaunch of both with
``--ckpt_path last.ckpt`` continues from the checkpoint's step to the weights of the uninterrupted run.

The global batches are arranged as follows. Under DDP the recipe's training loader is a plain shuffling DataLoader,
and Lightning shards it with ``DistributedSampler(shuffle=True, seed=42)`` (42: the recipes' ``seed_everything``):
each epoch one permutation of ``seed + epoch``, rank ``r`` of 2 reading its entries ``r, r + 2, ...``. Two ranks at
batch 16 then train together on the 32 consecutive entries that one process at batch 32 reads from
``DistributedSampler(num_replicas=1, seed=42)``, which is the one-process reference built here in the test process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from conftest import QUIET, free_port, quiet_trainer
from lightning.pytorch.callbacks import LambdaCallback
from torch.utils.data import DataLoader, DistributedSampler

import zoo
from datamodules import FunctionDataModule

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"),
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the launched processes through /proc"),
]

SEED = 42  # recipes/defaults.yaml's seed_everything, which Lightning's DistributedSampler takes as its seed
NUM_TRAIN = 256
GLOBAL_BATCH = 32
STEPS_PER_EPOCH = NUM_TRAIN // GLOBAL_BATCH  # 8; no rank gets padded samples (256 is even)
#: A small MLP on the recipe's generated function, no dropout or normalization, SGD at a constant lr.
MODEL = dict(hidden_dims=(16, 16), act="silu", optimizer="sgd", lr=0.1, weight_decay=0.0, scheduler="none")
DATA = dict(function="sinc_1d", num_train=NUM_TRAIN, num_val=32, num_test=32)
RECIPE_ARGS = [
    "--data.init_args.function", DATA["function"], "--data.init_args.num_train", str(DATA["num_train"]),
    "--data.init_args.num_val", str(DATA["num_val"]), "--data.init_args.num_test", str(DATA["num_test"]),
    "--data.init_args.batch_size", str(GLOBAL_BATCH // 2),
    "--model.init_args.hidden_dims", json.dumps(list(MODEL["hidden_dims"])),
    "--model.init_args.optimizer", MODEL["optimizer"], "--model.init_args.lr", str(MODEL["lr"]),
    "--model.init_args.scheduler", MODEL["scheduler"], "--test_after_fit", "false",
    "--trainer.callbacks+=_ddp_probe.RankProbe", *QUIET,
]  # fmt: skip
RUN_DIR = Path("logs", "function_mlp", "version_0")
#: Processes launched here carry this variable (with the node's rank) so that cleanup finds every one, workers
#: included: torchrun starts its workers in sessions of their own, and they outlive a killed agent.
MARKER = "ZOO_MULTINODE_TEST"


def _node_command(node_rank: int, port: int, *args: str) -> list[str]:
    """One node's command, as in docs/training.md (``python -m torch.distributed.run`` is the ``torchrun`` script)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    rendezvous = ["--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port)]
    trainer = ["--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp"]
    return [*torchrun, *rendezvous, "-m", "recipes.function_mlp", "fit", *trainer, "--trainer.accelerator", "cpu",
            *RECIPE_ARGS, *args]  # fmt: skip


def _marked(token: str) -> list[int]:
    """The ids of the processes whose environment holds ``MARKER=<token>...`` (only this user's can be read)."""
    prefix = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # gone, or another user's
                continue
            if any(variable.startswith(prefix) for variable in environ):
                found.append(int(entry.name))
    return found


def _kill(token: str) -> None:
    """SIGKILL the process groups of every process launched with ``token``: the torchrun agents and their workers,
    each of which leads a session of its own (never this test's group)."""
    for pid in _marked(token):
        try:
            group = os.getpgid(pid)
            if group == os.getpgrp():
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def _two_nodes(cwd: Path, probe: Path, *args: str) -> Iterator[tuple[list[subprocess.Popen], str]]:
    """Start node 0 and node 1 (each a torchrun of one worker) on a free port; yield them and the run's marker.

    Whatever happens, every process of the run is SIGKILLed on exit. Output goes to ``node<r>.log`` files (a pipe
    nobody reads would fill and block the worker).
    """
    token, port = uuid.uuid4().hex, free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "DDP_PROBE_DIR": str(probe)}
    nodes = []
    try:
        for rank in (0, 1):
            with open(_log(cwd, probe, rank), "w") as log:
                command, node_env = _node_command(rank, port, *args), {**env, MARKER: f"{token}-node{rank}"}
                nodes.append(subprocess.Popen(command, cwd=cwd, env=node_env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))  # fmt: skip
        yield nodes, token
    finally:
        _kill(token)
        for node in nodes:
            node.wait(timeout=30)


def _log(cwd: Path, probe: Path, rank: int) -> Path:
    return cwd / f"{probe.name}-node{rank}.log"


def _logs(cwd: Path, probe: Path) -> str:
    """The end of both nodes' output, for a failure message."""
    return "\n".join(f"--- node {rank}:\n{_log(cwd, probe, rank).read_text()[-3000:]}" for rank in (0, 1))


def _wait(nodes: list[subprocess.Popen], cwd: Path, probe: Path, timeout: float = 240) -> None:
    """Wait for both nodes to finish; fail with the end of their output unless both exit 0."""
    deadline = time.monotonic() + timeout
    try:
        codes = [node.wait(timeout=max(deadline - time.monotonic(), 1)) for node in nodes]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the nodes still run after {timeout} s:\n{_logs(cwd, probe)}")
    if codes != [0, 0]:
        pytest.fail(f"the nodes exited with {codes}:\n{_logs(cwd, probe)}")


def _wait_for(path: Path, nodes: list[subprocess.Popen], cwd: Path, probe: Path, timeout: float = 180) -> None:
    """Poll until ``path`` exists; fail when a node exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        exited = [node.returncode for node in nodes if node.poll() is not None]
        if exited or time.monotonic() > deadline:
            reason = f"a node exited with {exited}" if exited else f"{timeout} s"
            pytest.fail(f"no {path} after {reason}:\n{_logs(cwd, probe)}")
        time.sleep(0.02)


def _weights(checkpoint: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The model weights in ``checkpoint`` and its global step."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return state["state_dict"], state["global_step"]


def _probe(folder: Path, rank: int) -> dict:
    return json.loads((folder / f"rank{rank}.json").read_text())


def _difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[key] - b[key]).abs().max().item() for key in a)


@pytest.fixture(scope="module")
def reference() -> dict[int, dict[str, torch.Tensor]]:
    """One process at the global batch: the recipe's model and data, seeded as the recipe seeds them, fed
    ``DistributedSampler(num_replicas=1, seed=42)``'s batches of 32; the weights after every epoch, by global step."""
    data = FunctionDataModule(**DATA, batch_size=GLOBAL_BATCH)
    stats = {key: getattr(data, key) for key in zoo.MLPRegressor.data_links}
    L.seed_everything(SEED, verbose=False)  # LightningCLI seeds before it builds the model
    model = zoo.MLPRegressor(**MODEL, **stats)
    snapshots = {0: {key: value.clone() for key, value in model.state_dict().items()}}

    def snapshot(trainer: L.Trainer, module: L.LightningModule) -> None:
        snapshots[trainer.global_step] = {key: value.clone() for key, value in module.state_dict().items()}

    train = data.datasets["train"]
    sampler = DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=SEED)  # Lightning sets its epoch
    trainer = quiet_trainer(max_steps=20 * STEPS_PER_EPOCH, limit_val_batches=0,
                            callbacks=[LambdaCallback(on_train_epoch_end=snapshot)])  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(train, batch_size=GLOBAL_BATCH, sampler=sampler))
    return snapshots


def test_two_nodes_train_the_weights_of_one_process_with_the_same_global_batches(tmp_path, reference):
    """Two torchrun nodes at batch 16 each = one process at batch 32, over 6 epochs (48 SGD steps).

    DDP averages the two ranks' mean gradients, which is the mean over the global batch: only the order of the float
    additions differs from one process. Measured: max abs weight difference 3.6e-7 on weights that moved by 1.1 (and
    1.2e-6 after 160 steps, in the resume test); hence the bound 1e-5.
    """
    steps = 6 * STEPS_PER_EPOCH
    with _two_nodes(tmp_path, tmp_path / "probe", f"--trainer.max_steps={steps}") as (nodes, _):
        _wait(nodes, tmp_path, tmp_path / "probe")
    zero, one = _probe(tmp_path / "probe", 0), _probe(tmp_path / "probe", 1)
    assert (zero["rank"], one["rank"], zero["world_size"], one["world_size"]) == (0, 1, 2, 2)
    assert [epoch["params"] for epoch in zero["train"]] == [epoch["params"] for epoch in one["train"]]
    # Node 1 (global rank 1, local rank 0) claimed no run folder of its own: one run, one folder.
    assert [path.name for path in (tmp_path / RUN_DIR.parent).iterdir()] == [RUN_DIR.name]

    weights, step = _weights(tmp_path / RUN_DIR / "checkpoints" / "last.ckpt")
    assert step == steps
    moved = _difference(reference[steps], reference[0])
    assert moved > 0.05, "training barely moved the weights: the comparison would prove nothing"
    difference = _difference(weights, reference[steps])
    assert difference <= 1e-5, f"two nodes' weights differ from one process's by {difference:.3g}"


def test_a_killed_node_fails_the_run_and_both_resume_from_last_ckpt_to_the_uninterrupted_weights(tmp_path, reference):
    """Kill node 1 (agent and worker, SIGKILL) once last.ckpt exists; node 0 must exit non-zero within seconds. Both
    nodes relaunched with ``--ckpt_path`` continue from the checkpoint's step and end on the weights one
    uninterrupted process reaches.

    Checkpoints come every epoch's 8 steps: under DDP the training loader is Lightning's sharded one, which has no
    position to restore, so only a checkpoint at an epoch's end resumes exactly (from one inside an epoch Lightning
    warns that the loader is not resumable).
    """
    steps = 20 * STEPS_PER_EPOCH
    checkpoint = RUN_DIR / "checkpoints" / "last.ckpt"
    run = [f"--trainer.max_steps={steps}", "--last_every_n_steps", str(STEPS_PER_EPOCH)]
    with _two_nodes(tmp_path, tmp_path / "killed", *run) as (nodes, token):
        _wait_for(tmp_path / checkpoint, nodes, tmp_path, tmp_path / "killed")
        _kill(f"{token}-node1")
        killed = time.monotonic()
        try:
            code = nodes[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("node 0 still runs 60 s after node 1 was killed")
        # Measured 2.4 s (7 s on a loaded machine): gloo sees the connection reset at the next collective, the
        # worker raises and its torchrun agent exits with the worker's failure.
        failed_after = time.monotonic() - killed
        assert code != 0, "node 0 finished before node 1 was killed: the run is too short for the test"
        assert failed_after < 30, f"node 0 took {failed_after:.1f} s to fail"

    weights, resumed_at = _weights(tmp_path / checkpoint)
    assert 0 < resumed_at < steps and resumed_at % STEPS_PER_EPOCH == 0, resumed_at
    assert _difference(weights, reference[resumed_at]) <= 1e-5  # the checkpoint holds the state of its step

    with _two_nodes(tmp_path, tmp_path / "resumed", *run, "--ckpt_path", str(checkpoint)) as (nodes, _):
        _wait(nodes, tmp_path, tmp_path / "resumed")
    weights, step = _weights(tmp_path / checkpoint)
    assert step == steps
    # The resumed processes trained the epochs after the checkpoint's and no others: a run restarted from scratch
    # would reach the same weights, but would list every epoch.
    trained = [epoch["epoch"] for epoch in _probe(tmp_path / "resumed", 0)["train"]]
    assert trained == list(range(resumed_at // STEPS_PER_EPOCH, steps // STEPS_PER_EPOCH))
    assert (tmp_path / RUN_DIR / "config.resume-1.yaml").is_file()  # it logged into the run it resumed
    difference = _difference(weights, reference[steps])
    assert difference <= 1e-5, f"the resumed run's weights differ from one process's by {difference:.3g}"
