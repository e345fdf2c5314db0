"""What each instance type a pool may use offers a job, and how big a job may be to fit.

AWS Batch places a job only on an instance whose *registered* resources cover it, and the ECS
agent registers less memory than is installed: an m6i.large registers about 7,817-7,821 MiB of
its 8,192 on Amazon Linux 2 and about 86 MiB less on AL2023 (~94.4 %; the kernel, the agent and,
on GPU hosts, the driver take the rest). A job that asks for more than a type registers never
runs there, and one that fits no type of its pool stays RUNNABLE until the queue cancels it. So
a job asks for at most 92 % of the smallest installed memory of its pool: below what ECS registers
on both AMIs, on every type of the pool. What the worker needs (stacks/sizing.py) must fit under
that, or synth refuses the pool.

A GPU job asks for one GPU, so a host with several runs one worker per GPU (ECS hands each
container its own GPU): each job asks for its share of the host, the vCPUs and that 92 % of
memory divided by the workers one host runs, the smallest share over the pool's types. The
workers of a host share its root volume (stacks/sizing.py sizes it for all of them), and a
worker-hour costs the instance's price divided by its workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# the dated, sourced price table the cost benchmarks use (bench/cost.py)
PRICES = Path(__file__).resolve().parent.parent / "bench" / "prices.json"
JOB_MEMORY_FRACTION = 0.92  # of installed memory: what a job may ask for
# what ECS registers on an m6i.large under AL2023, of its installed 8,192 MiB (see above)
REGISTERED_FRACTION_AL2023 = (7817 - 86) / 8192


@dataclass(frozen=True)
class JobSize:
    vcpus: int
    memory_mib: int
    gpus: int


@dataclass(frozen=True)
class InstanceSpec:
    vcpus: int
    memory_mib: int  # installed
    gpus: int = 0
    gpu: str = ""

    @property
    def job_memory_mib(self) -> int:
        """The most memory one job may ask for and still be placed here, on AL2 and AL2023."""
        return int(self.memory_mib * JOB_MEMORY_FRACTION)

    def workers(self, gpus_per_worker: int) -> int:
        """The workers one host runs: one per `gpus_per_worker` GPUs (a CPU worker, 0 GPUs: one)."""
        return max(1, self.gpus // gpus_per_worker) if gpus_per_worker else 1

    def share(self, gpus_per_worker: int) -> JobSize:
        """One worker's share of a host: its GPUs, the host's vCPUs and job memory over its workers.
        All of them together ask for no more than one job of the whole host would."""
        n = self.workers(gpus_per_worker)
        return JobSize(vcpus=self.vcpus // n, memory_mib=self.job_memory_mib // n, gpus=gpus_per_worker)


# us-east-1: vCPUs, memory (GiB) and GPUs from the EC2 instance type pages and, for g4dn and g5,
# the AWS Batch user guide's GPU jobs table; the multi-GPU types cross-checked against torchx's
# named_resources_aws (checked December 2026)
INSTANCE_SPECS: dict[str, InstanceSpec] = {
    # GPU: 1 GPU each at xlarge / 2xlarge
    "g4dn.xlarge": InstanceSpec(4, 16 * 1024, 1, "T4"),
    "g4dn.2xlarge": InstanceSpec(8, 32 * 1024, 1, "T4"),
    "g5.xlarge": InstanceSpec(4, 16 * 1024, 1, "A10G"),
    "g5.2xlarge": InstanceSpec(8, 32 * 1024, 1, "A10G"),
    "g6.xlarge": InstanceSpec(4, 16 * 1024, 1, "L4"),
    "g6.2xlarge": InstanceSpec(8, 32 * 1024, 1, "L4"),
    "g6e.xlarge": InstanceSpec(4, 32 * 1024, 1, "L40S"),
    "g6e.2xlarge": InstanceSpec(8, 64 * 1024, 1, "L40S"),
    # GPU: several each (one worker per GPU)
    "g4dn.12xlarge": InstanceSpec(48, 192 * 1024, 4, "T4"),
    "g5.12xlarge": InstanceSpec(48, 192 * 1024, 4, "A10G"),
    "g5.48xlarge": InstanceSpec(192, 768 * 1024, 8, "A10G"),
    "g6.12xlarge": InstanceSpec(48, 192 * 1024, 4, "L4"),
    "g6.48xlarge": InstanceSpec(192, 768 * 1024, 8, "L4"),
    "g6e.12xlarge": InstanceSpec(48, 384 * 1024, 4, "L40S"),
    "p4d.24xlarge": InstanceSpec(96, 1152 * 1024, 8, "A100"),
    "p5.48xlarge": InstanceSpec(192, 2048 * 1024, 8, "H100"),
    # CPU
    "c6i.xlarge": InstanceSpec(4, 8 * 1024),
    "c6i.2xlarge": InstanceSpec(8, 16 * 1024),
    "c7i.xlarge": InstanceSpec(4, 8 * 1024),
    "c7i.2xlarge": InstanceSpec(8, 16 * 1024),
    "m6i.large": InstanceSpec(2, 8 * 1024),
    "m6i.xlarge": InstanceSpec(4, 16 * 1024),
    "m7i.xlarge": InstanceSpec(4, 16 * 1024),
}


def job_size(instance_types: list[str], gpus: int, needs_mib: int) -> JobSize:
    """The largest job every type of a pool can place as many of as it has workers: one whole
    host for a CPU pool, one GPU's share of it for a GPU pool (`gpus` per worker), the smallest
    share over the types. Its memory must hold what the worker needs (`needs_mib`)."""
    specs = {t: spec(t) for t in instance_types}
    if gpus and any(s.gpus < gpus for s in specs.values()):
        raise ValueError(f"every GPU pool instance type needs at least {gpus} GPU(s)")
    shares = {t: s.share(gpus) for t, s in specs.items()}
    tightest = min(shares, key=lambda t: (shares[t].memory_mib, t))
    memory = shares[tightest].memory_mib
    if needs_mib > memory:
        host = specs[tightest]
        workers = host.workers(gpus)
        per = f", {workers} workers, one per GPU" if workers > 1 else ""
        raise ValueError(
            f"a worker needs {needs_mib} MiB, but {tightest} ({host.memory_mib} MiB installed{per}) lets a job "
            f"ask for {memory} MiB at most: list larger instance types, or hold fewer jobs per worker"
        )
    return JobSize(vcpus=min(s.vcpus for s in shares.values()), memory_mib=memory, gpus=gpus)


def workers_per_host(instance_types: list[str], gpus: int) -> int:
    """The most workers one host of the pool runs (they share its root volume)."""
    return max(spec(t).workers(gpus) for t in instance_types)


def spec(instance_type: str) -> InstanceSpec:
    try:
        return INSTANCE_SPECS[instance_type]
    except KeyError:
        raise ValueError(
            f"{instance_type} is not a known instance type ({', '.join(sorted(INSTANCE_SPECS))}); "
            "add its vCPUs and memory to stacks/instances.py"
        ) from None


def pool_hourly_usd(instance_types: list[str], spot: bool, prices_file: Path = PRICES) -> float | None:
    """The hourly price a pool's worker is charged at, for the per-job cost in job records:
    its share of the dearest of its types (Batch may place a worker on any of them; a host of
    several GPUs runs one worker per GPU), at the typical Spot price when the pool runs Spot
    first, else on-demand. None when a type has no price in the table (the job records then
    carry no cost; set `gpu_hourly_usd`/`cpu_hourly_usd`)."""
    table = json.loads(prices_file.read_text())
    known = {**table["instances"], **table.get("pool_instances", {})}
    hourly = []
    for name in instance_types:
        entry = known.get(name)
        if entry is None:
            return None
        price = float(entry["spot"]["typical_per_hour"] if spot else entry["on_demand_per_hour"])
        hourly.append(price / spec(name).workers(1))
    return max(hourly)
