"""Workers on a Ray cluster (``motune run FILE --ray ADDRESS|auto``; ``pip install "motune[ray]"``).

The driver (the ``motune run`` process) checks and opens the study, then
starts workers as Ray actors, each holding ``num_gpus`` / ``num_cpus`` of
the cluster: Ray's own assignment sets each actor's ``CUDA_VISIBLE_DEVICES``,
so a worker sees only the GPUs Ray gave it. Every worker runs the same loop
as ``motune worker`` (:func:`motune.run.pool.worker_loop`) against the
study's shared storage, taking a ticket from a counter actor before each
trial, so the cluster runs exactly ``--trials`` trials. Requirements: a
storage every node reaches (PostgreSQL; SQLite is refused when the cluster
has more than one node), the study file at the same path on every node (a
shared filesystem or the same checkout), and, for kept models, a shared
artifact store.

The driver's ``MOTUNE_*`` settings (heartbeat, artifact folder, lock folder
...) go to every worker through Ray's ``runtime_env``, and the storage URL is
passed resolved (a relative SQLite path made absolute). A worker whose actor
dies (its node lost, its process killed) is reported; its running trial is
failed at once with the reason and retried (the retry brings its own ticket,
whoever notices the death), and a new actor takes its place (up to
``max_replacements``; one Ray cannot place is left out). Ctrl-C or SIGTERM
on the driver stops the workers and fails their running trials with the
reason.
Progress comes from the storage (the driver reads the finished trials every
second).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from motune.errors import SpecError
from motune.results import Result, record_of
from motune.run import _optuna_compat as compat
from motune.run.location import locate
from motune.run.pool import worker_loop
from motune.run.study import attach_store, open_study
from motune.run.supervisor import Ended, Event, Supervisor, Tickets


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SpecError('--ray needs Ray: pip install "motune[ray]"') from None
    return ray


def _worker_class(ray: Any) -> Any:
    @ray.remote
    class Worker:
        def where(self) -> dict[str, Any]:
            return {"host": platform.node(), "pid": os.getpid(),
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

        def run(self, study_file: str, name: str, changes: dict[str, Any], deadline: float | None, tickets: Any,
                index: int, threads: int) -> None:
            os.environ["MOTUNE_WORKER"] = json.dumps({"index": index, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                      "threads": threads, "scheduler": "ray"})
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            compat.RETRY_CREATED.append(lambda n=1: tickets.give_back.remote(n))  # a retry's own ticket
            timeout = None if deadline is None else max(0.001, deadline - time.time())
            worker_loop(study_file, name, changes, timeout=timeout, threads=threads,
                        budget=lambda: ray.get(tickets.take.remote()))

    return Worker


class _RemoteTickets:
    """The tickets actor, read as :class:`~motune.run.supervisor.Tickets` by the supervisor."""

    def __init__(self, ray: Any, actor: Any) -> None:
        self.ray, self.actor = ray, actor

    def take(self) -> bool:
        return self.ray.get(self.actor.take.remote())

    def give_back(self, n: int = 1) -> None:
        self.ray.get(self.actor.give_back.remote(n))

    def close(self) -> None:
        self.ray.get(self.actor.close.remote())

    def remaining(self) -> int | None:
        return self.ray.get(self.actor.remaining.remote())


class RayLauncher:
    """Workers as Ray actors: what :class:`~motune.run.supervisor.Supervisor` needs of them (see the module
    docstring). The workers take their tickets from a tickets actor; the trials they finish are read from the
    storage."""

    prefix = "ray"
    shows_states = False  # its workers' trial starts are not heard: progress comes from the storage

    def __init__(self, ray: Any, ostudy: optuna.Study, study: Any, study_file: str, changes: dict[str, Any], *,
                 n_trials: int | None, deadline: float | None, gpus_per_worker: float, cpus_per_worker: float,
                 threads: int, place_timeout_s: float, where: str) -> None:
        self.ray, self.ostudy, self.study, self.study_file, self.changes = ray, ostudy, study, study_file, changes
        self.deadline, self.threads, self.place_timeout_s = deadline, threads, place_timeout_s
        self.gpus_per_worker, self.cpus_per_worker = gpus_per_worker, cpus_per_worker
        self.where = where
        self.actor_tickets = ray.remote(Tickets).remote(n_trials)
        self.tickets = _RemoteTickets(ray, self.actor_tickets)
        self.worker_class = _worker_class(ray)
        self.env = {"env_vars": worker_environment(gpus_per_worker)}
        self.keys = [c.key for c in study.constraints]
        self.running: dict[Any, tuple[int, Any, dict[str, Any]]] = {}  # future -> (index, actor, where)
        self.placed: list[tuple[Any, dict[str, Any]]] = []  # every actor that ran, and where
        self.stopped = False
        self.first = True
        self.seen: set[int] = {t.number for t in ostudy.get_trials(deepcopy=False) if t.state.is_finished()}

    def label(self, index: int) -> str:
        return f"ray worker {index}"

    def start(self, indices: Sequence[int], grant: Callable[[], bool]) -> list[int]:
        """Start actors for ``indices``; returns the ones Ray could not place in time (a stop ends the wait). A
        first start that places none is an error."""
        ray, pending = self.ray, {}
        for index in indices:
            actor = self.worker_class.options(num_gpus=self.gpus_per_worker, num_cpus=self.cpus_per_worker,
                                              runtime_env=self.env).remote()
            pending[actor.where.remote()] = (index, actor)
        waited = time.monotonic()
        while pending and not self.stopped and time.monotonic() - waited < self.place_timeout_s:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
            for ref in ready:
                index, actor = pending.pop(ref)
                where = ray.get(ref)
                self.placed.append((actor, where))
                future = actor.run.remote(self.study_file, self.study.name, self.changes, self.deadline,
                                          self.actor_tickets, index, self.threads)
                self.running[future] = (index, actor, where)
        for index, actor in pending.values():
            ray.kill(actor)
        if self.first and pending and not self.running:
            raise SpecError(f"Ray could not place a worker with {self.gpus_per_worker:g} GPU and "
                            f"{self.cpus_per_worker:g} CPU within {self.place_timeout_s:g} s (free: "
                            f"{ray.available_resources()})")
        self.first = False
        return [index for index, _ in pending.values()]

    def events(self) -> list[Event]:
        ray, out = self.ray, []
        done, _ = ray.wait(list(self.running), num_returns=1, timeout=1.0)
        for t in self.ostudy.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                out.append(Event("end", None, record_of(t, self.keys)))
        for future in done:
            index, actor, where = self.running.pop(future)
            try:
                ray.get(future)
            except ray.exceptions.RayTaskError as err:  # the worker's own error (a study file that fails ...)
                cause = err.as_instanceof_cause()
                out.append(Event("error", index, (f"{type(cause).__name__}: {cause}", cause)))
                continue
            except ray.exceptions.RayActorError as err:
                out.append(Event("ended", index, Ended(index, where["pid"], where["host"], None, None,
                                                       f"on {where['host']} (its Ray actor was lost)",
                                                       f"its Ray actor was lost: {type(err).__name__}")))
                continue
            out.append(Event("ended", index, Ended(index, where["pid"], where["host"], 0)))
        return out

    def busy(self) -> bool:
        return bool(self.running) and not self.stopped

    def stop(self, signal_name: str) -> None:
        self.stopped = True  # the actors are killed at the close

    def close(self, stopped_by: str | None) -> list[tuple[int, str, str]]:
        """Free the cluster's GPUs and CPUs; the trials the actors left running are failed with the reason."""
        ray = self.ray
        self.tickets.close()
        for actor, _ in self.placed:
            ray.kill(actor)
        time.sleep(1.0 if self.placed else 0.0)  # ray.kill returns before the actor is gone
        reason = f"interrupted by {stopped_by} (the Ray worker was stopped)" if stopped_by \
            else "the Ray worker was stopped"
        self.running.clear()
        ray.kill(self.actor_tickets)
        return [(where["pid"], where["host"], reason) for _, where in self.placed]


def check_gpus_per_worker(gpus: Any, cluster_gpus: float) -> float:
    """The GPUs each Ray worker holds: a whole number, or a fraction of one GPU that shares it evenly (1/2,
    1/3, 1/4 ...); 0 for CPU workers. Anything else (1.5: a GPU and half of another) is a
    :class:`~motune.errors.SpecError`, as is more than the cluster has."""
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not gpus >= 0:
        raise SpecError(f"--gpus-per-trial must be a number >= 0, got {gpus!r}")
    gpus = float(gpus)
    if gpus > 1 and not gpus.is_integer():
        raise SpecError(f"--gpus-per-trial {gpus:g}: give whole GPUs (1, 2 ...) or a share of one GPU (0.5, 0.25): "
                        "a worker cannot hold part of a second GPU")
    if 0 < gpus < 1 and abs(1 / gpus - round(1 / gpus)) > 1e-6:
        raise SpecError(f"--gpus-per-trial {gpus:g}: a share of one GPU must divide it evenly (0.5, 0.333, 0.25 ...)")
    if gpus > cluster_gpus:
        raise SpecError(f"--gpus-per-trial {gpus:g}, but the Ray cluster has {cluster_gpus:g} GPU(s)")
    return gpus


def worker_environment(gpus_per_worker: float) -> dict[str, str]:
    """What every Ray worker's environment gets: the driver's motune settings, and for a worker that holds no
    GPU an empty ``CUDA_VISIBLE_DEVICES`` (Ray leaves it unset, so the worker would see every GPU of its node
    and train on the first)."""
    env = _forwarded_environment()
    if gpus_per_worker == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def reachable(address: str, timeout_s: float) -> None:
    """Raise :class:`SpecError` unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection within
    ``timeout_s`` seconds; ``"auto"`` and ``"local"`` are left to Ray (which fails at once when it finds none)."""
    if address in ("auto", "local") or not isinstance(address, str):
        return
    where = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(f"--ray {address!r}: give 'auto', 'local', HOST:PORT or ray://HOST:PORT")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, min(2.0, timeout_s))):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise SpecError(f"cannot reach the Ray cluster at {address} within {timeout_s:g} s ({err}); is it "
                                "running (ray start --head), and is the address its GCS / client port?") from None
        time.sleep(0.5)


def _forwarded_environment() -> dict[str, str]:
    """The driver's motune settings, for every worker (an existing cluster's nodes do not have them)."""
    return {k: v for k, v in os.environ.items() if k.startswith("MOTUNE_")}


def run_on_ray(study: Any, study_file: str, *, address: str, n_trials: int | None, timeout: float | None,
               changes: dict[str, Any], gpus_per_worker: float = 0, cpus_per_worker: float = 1,
               workers: int | None = None, threads: int | None = None, show_progress: bool = True,
               max_replacements: int = 3, init_kwargs: dict[str, Any] | None = None,
               place_timeout_s: float = 120.0, connect_timeout_s: float = 30.0) -> tuple[Result, str | None]:
    """Run ``study`` on the Ray cluster at ``address`` (``"auto"``, ``"host:port"``, ``"ray://..."``, or
    ``"local"`` for a Ray started here); returns the result read back and the signal that stopped it
    (``None``). An address that does not answer within ``connect_timeout_s`` seconds is an error (Ray itself
    would keep retrying for minutes)."""
    ray = _ray()
    site = locate(study)
    location = site.shared_url("--ray workers")  # the same file (SQLite) or server from every worker
    if not ray.is_initialized():
        reachable(address, connect_timeout_s)
        ray.init(address=None if address == "local" else address, **(init_kwargs or {}))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if location.startswith("sqlite") and len(nodes) > 1:
        raise SpecError(f"a SQLite file cannot be shared by the {len(nodes)} machines of this Ray cluster: use a "
                        "PostgreSQL storage (--storage postgresql://...)")
    resources = ray.cluster_resources()
    gpus_per_worker = check_gpus_per_worker(gpus_per_worker, resources.get("GPU", 0))
    if gpus_per_worker == 0 and resources.get("GPU", 0) > 0:
        warnings.warn(f"the Ray cluster has {resources['GPU']:g} GPU(s), but --gpus-per-trial is 0: the workers run "
                      "on the CPU (they see no GPU); give --gpus-per-trial 1 to train on them", stacklevel=2)
    if workers is None:
        by_gpu = int(resources.get("GPU", 0) // gpus_per_worker) if gpus_per_worker > 0 else None
        by_cpu = int(resources.get("CPU", 1) // max(cpus_per_worker, 1e-9))
        workers = max(1, min(x for x in (by_gpu, by_cpu, n_trials) if x is not None))
    ostudy = open_study(study, site)
    launcher = RayLauncher(ray, ostudy, study, study_file, {**changes, "storage": location}, n_trials=n_trials,
                           deadline=None if timeout is None else time.time() + timeout,
                           gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                           threads=threads or max(1, int(cpus_per_worker)), place_timeout_s=place_timeout_s,
                           where=f"on Ray ({len(nodes)} node(s)) in {workers} worker(s) of {gpus_per_worker:g} GPU "
                                 f"and {cpus_per_worker:g} CPU each")
    supervisor = Supervisor(study, ostudy, launcher, list(range(workers)), n_trials, timeout,
                            max_replacements=max_replacements, show_progress=show_progress)
    result, interrupted, _ = supervisor.run(lambda result: attach_store(result, site.named, site.artifact_store))
    return result, interrupted


__all__ = ["RayLauncher", "run_on_ray"]
