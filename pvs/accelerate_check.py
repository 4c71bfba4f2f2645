"""Check an ``accelerate launch`` config against this machine before a long run starts.

    from pvs.accelerate_check import check_accelerate_config
    check_accelerate_config("configs/accelerate/ddp_1node.yaml", num_processes=8)
    # or: pvs check-accelerate configs/accelerate/ddp_1node.yaml --num_processes 8

A mismatch (more processes than GPUs, gpu_ids this machine lacks, a CPU config on a GPU machine, a
MULTI_CPU config that would start one process) is a one-line PvsError, found before any process starts.
"""
from __future__ import annotations

import os
from pathlib import Path

from pvs.errors import PvsError, check

def check_accelerate_config(path: str | Path, num_processes: int | None = None,
                            gpu_count: int | None = None) -> dict:
    """Check an `accelerate launch --config_file` YAML against this machine; PvsError (one line) on a mismatch.

    Reads the file with accelerate's own parser (unknown keys are refused), then compares distributed_type,
    num_processes (or the ``num_processes`` given to `accelerate launch --num_processes`) and gpu_ids with
    the GPUs torch sees (``gpu_count`` overrides the count, for tests). Returns a summary: distributed_type,
    num_processes, device ('cpu' or 'cuda'), gpus, launcher.
    """
    import torch
    from accelerate.commands.config.config_args import ClusterConfig

    path = Path(path)
    check(path.is_file(), f"accelerate config {str(path)!r} does not exist")
    try:
        conf = ClusterConfig.from_yaml_file(yaml_file=str(path))
    except (ValueError, TypeError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PvsError(f"accelerate config {path.name}: {first}") from None
    dtype = str(getattr(conf.distributed_type, "value", conf.distributed_type))
    gpus = torch.cuda.device_count() if gpu_count is None else gpu_count
    n = num_processes if num_processes is not None else conf.num_processes
    check(isinstance(n, int) and (n >= 1 or n == -1), f"num_processes={n!r} must be a positive integer")
    machines = max(1, conf.num_machines or 1)
    where = f"accelerate config {path.name}"
    if n == -1:
        raise PvsError(f"{where} leaves num_processes unset (-1); pass `accelerate launch --num_processes N` "
                       f"(this machine has {gpus} GPU{'s' if gpus != 1 else ''})")
    per_machine = n // machines
    if dtype == "MULTI_CPU":
        check(n == 1 or bool(conf.mpirun_config.get("mpirun_hostfile")),
              f"{where}: distributed_type MULTI_CPU with num_processes={n} and no mpirun_config; accelerate "
              f"launch then starts ONE process; allowed: an mpirun_hostfile, or a torchrun config like "
              f"configs/accelerate/cpu_2proc.yaml")
        return {"distributed_type": dtype, "num_processes": n, "device": "cpu", "gpus": gpus,
                "launcher": "mpirun" if n > 1 else "single"}
    if dtype == "NO":
        return {"distributed_type": dtype, "num_processes": 1, "device": "cuda" if gpus and not conf.use_cpu else "cpu",
                "gpus": gpus, "launcher": "single"}
    check(dtype in ("MULTI_GPU", "FSDP"),
          f"{where}: distributed_type {dtype} is not supported by pvs.train; allowed: NO, MULTI_CPU, MULTI_GPU, FSDP")
    if conf.use_cpu and dtype == "MULTI_GPU":
        # a CPU config launched through torchrun (see configs/accelerate/cpu_2proc.yaml): it needs no GPU, but
        # on a GPU machine pvs.train would put its processes on the GPUs unless ACCELERATE_USE_CPU is set
        forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        check(gpus == 0 or forced, f"{where} is a CPU config (use_cpu: true) but this machine has {gpus} GPUs, "
                                   f"which the processes would use; set ACCELERATE_USE_CPU=1 or use ddp_1node.yaml")
        return {"distributed_type": dtype, "num_processes": n, "device": "cpu", "gpus": gpus, "launcher": "torchrun"}
    check(not conf.use_cpu, f"{where}: distributed_type {dtype} with use_cpu: true; allowed: use_cpu false "
                            f"(FSDP/DDP over GPUs) or the CPU config configs/accelerate/cpu_2proc.yaml")
    check(gpus > 0, f"{where} ({dtype}) needs {per_machine} GPUs per machine; this machine has none "
                    f"(on CPUs use configs/accelerate/cpu_2proc.yaml)")
    ids = str(conf.gpu_ids) if conf.gpu_ids is not None else "all"
    if ids != "all":
        listed = [int(i) for i in ids.split(",") if i.strip()]
        bad = [i for i in listed if not 0 <= i < gpus]
        check(not bad, f"{where}: gpu_ids {ids} name GPU(s) {bad} this machine lacks; allowed: 0..{gpus - 1} or all")
        check(len(listed) >= per_machine, f"{where}: num_processes={per_machine} per machine but gpu_ids lists "
                                          f"{len(listed)} GPU(s) ({ids})")
    else:
        check(per_machine <= gpus, f"{where}: num_processes={per_machine} per machine but this machine has {gpus} "
                                   f"GPU{'s' if gpus != 1 else ''}; allowed: 1..{gpus}")
    return {"distributed_type": dtype, "num_processes": n, "device": "cuda", "gpus": gpus, "launcher": "torchrun"}
