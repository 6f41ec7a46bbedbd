"""Pinning a run to cores no other run uses, so that concurrent time-budgeted runs never share a core.

Snakemake counts cores but does not say which ones a job gets; two single-threaded runs side by side
are otherwise free to migrate onto the same core. ``claim_cores(n)`` takes ``n`` physical cores
nobody else holds, one ``flock`` lock file per core in a folder all runs on this machine share
(``$NGP_OHEM_CORE_LOCKS``, default ``<tmp>/ngp-ohem-cores-<uid>``), and pins the process to one
logical CPU of each. The kernel drops the locks when the process ends, however it ends (kill -9
included), so a crashed run never blocks a core. SMT siblings count as one core: two runs on the
two hyper-threads of one core would share it.
"""

from __future__ import annotations

import fcntl
import os
import random
import sys
import time
from pathlib import Path

from ngp_ohem.errors import ConfigError

LOCK_DIR_ENV = "NGP_OHEM_CORE_LOCKS"


def default_lock_dir() -> Path:
    """A fixed machine-wide folder (not $TMPDIR, which SLURM makes per job): every run must see every lock."""
    return Path(os.environ.get(LOCK_DIR_ENV) or "/tmp") / f"ngp-ohem-cores-{os.getuid()}"


def physical_cores(cpus: list[int]) -> list[tuple[int, list[int]]]:
    """(core id, logical CPUs of ``cpus`` on it) per physical core, sorted; the core id is the lowest of
    *all* its SMT siblings, so processes with different affinities name a core alike."""
    groups: dict[int, list[int]] = {}
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            core = min(_parse_cpu_list(siblings.read_text()))
        except (OSError, ValueError):
            core = cpu
        groups.setdefault(core, []).append(cpu)
    return sorted((core, sorted(group)) for core, group in groups.items())


def _parse_cpu_list(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]."""
    out: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim_cores(n: int, lock_dir: Path | None = None, poll_s: float = 1.0) -> list[int]:
    """Lock ``n`` free physical cores (waiting while other runs hold them), pin this process to them and
    return the pinned CPUs. The locks are held until the process ends (their files stay open).

    ``n = 0`` means every core of the affinity. Call it before torch starts its thread pool: threads
    created later inherit the pinning.
    """
    if n < 0:
        raise ConfigError(f"threads must be >= 0 to pin cores, got {n}")
    cpus = sorted(os.sched_getaffinity(0))
    cores = physical_cores(cpus)
    want = len(cores) if n == 0 else n
    if want > len(cores):
        raise ConfigError(f"threads={n} asks for more cores than the {len(cores)} this process may use ({cpus})")
    folder = lock_dir or default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        held: list[tuple[int, list[int]]] = []
        for core, logical in cores:
            fd = _try_lock(folder / f"core{core}.lock")
            if fd is not None:
                held.append((fd, logical))
                if len(held) == want:
                    cpus = [logical[0] for _, logical in held]
                    os.sched_setaffinity(0, cpus)
                    return cpus
        for fd, _ in held:
            os.close(fd)
        if not announced:
            print(
                f"ngp-ohem: waiting for {want} free core(s): other ngp-ohem runs hold the rest (locks in {folder})",
                file=sys.stderr,
            )
            announced = True
        time.sleep(poll_s * random.uniform(0.5, 1.5))  # jitter: claimants do not retry in lockstep
