"""`make bench-scaling`: one merge in one process against the same merge partitioned
(prepare, N merge workers side by side, commit), as the operator runs them in Pods.

Every step is the loader's own command line (`productimport import --stage ...`), each a
fresh process measured by bench.measure: wall time, CPU seconds (user + system) and peak
RSS. The N merge workers start together, as an Indexed Job's Pods do on one node; the
partitioned wall time runs from the prepare step's start to the commit's end. Each run
merges update.csv into its own copy of one base catalog, so every run does the same work;
DuckDB's bare read_csv -> Parquet of update.csv (bench/floor.py) runs first, in the same
run, as the floor the merges are compared with.

Configuration: --rows/BENCH_ROWS (10,000,000), --pods/BENCH_PODS (1,2,4),
--memory-limit/BENCH_MEMORY_LIMIT (1GB, each process's DuckDB limit), --threads
/BENCH_THREADS (DuckDB threads per process; unset: all cores, as a Pod without a CPU
limit). Results go to bench/out/results/scaling-rows<N>-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench import generate
from bench.measure import Measurement, run, warm
from bench.run import OUT, engine_command, floor_argv, log

# Issue 17's targets, 4 merge Pods against one on this 2-core node.
TARGET_WALL = 1.2
TARGET_CPU = 1.3


@dataclass
class Config:
    label: str
    pods: int | None  # None: the one-Pod import
    steps: dict[str, list[Measurement]] = field(default_factory=dict)
    wall: float = 0.0
    result: dict = field(default_factory=dict)
    load: float = 0.0  # the 1-minute load average when it started (the machine is shared)

    @property
    def cpu(self) -> float:
        return sum(m.cpu_seconds for ms in self.steps.values() for m in ms)

    @property
    def peak_mb(self) -> float:
        return max(m.peak_rss_mb for ms in self.steps.values() for m in ms)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--rows", type=int, default=int(env("BENCH_ROWS", "10000000")))
    parser.add_argument("--pods", default=env("BENCH_PODS", "1,2,4"))
    parser.add_argument("--memory-limit", default=env("BENCH_MEMORY_LIMIT", "1GB"))
    parser.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "0")) or None)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    engine = engine_command(args=argparse.Namespace(engine=None))
    if engine is None:
        log("the engine's CLI is not installed (make setup)")
        return 2
    directory, manifest = generate.ensure(args.rows, args.seed, log=log)
    stores = OUT / "stores" / f"scaling-rows{args.rows}"
    template = stores / "after-base"
    common = ["--catalog", "bench", "--max-errors", str(args.rows), "--json"]
    common += ["--memory-limit", args.memory_limit]
    if args.threads:
        common += ["--threads", str(args.threads)]
    if not (template / "default" / "bench").is_dir():
        shutil.rmtree(stores, ignore_errors=True)
        log(f"base: importing base.csv ({args.rows:,} rows) into an empty catalog ...")
        argv = [*engine, "import", str(directory / "base.csv"), "--store", str(template)]
        run([*argv, *common]).check()

    # DuckDB's bare read_csv -> Parquet of the same file, in this run: the floor the
    # issue's 2.5x is measured against (bench/floor.py).
    target = OUT / "tmp" / "floor-scaling.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    log("floor: converting update.csv ...")
    warm(directory / "update.csv")  # the merges after it read it warm too
    floor = run(floor_argv(args, directory / "update.csv", target)).check()
    target.unlink(missing_ok=True)
    log(f"  floor: {floor.seconds:.1f} s, {floor.peak_rss_mb:.0f} MB")

    configs = [Config("one Pod (today's import)", None)]
    configs += [Config(f"partitioned, {n} merge Pod{'s' * (n > 1)}", n) for n in _pods(args)]
    for config in configs:
        work = stores / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(template, work)
        log(f"{config.label}: merging update.csv ...")
        source = [*engine, "import", str(directory / "update.csv"), "--store", str(work)]
        config.load = os.getloadavg()[0]
        started = time.perf_counter()
        if config.pods is None:
            config.steps["all"] = [run([*source, *common]).check()]
        else:
            config.steps["prepare"] = [_step(source, common, "prepare", config.pods)]
            with ThreadPoolExecutor(max_workers=config.pods) as pool:
                merges = [
                    pool.submit(_step, source, common, "merge", config.pods, i)
                    for i in range(config.pods)
                ]
                config.steps["merge"] = [m.result() for m in merges]
            config.steps["commit"] = [_step(source, common, "commit", config.pods)]
        config.wall = time.perf_counter() - started
        config.result = json.loads(config.steps[list(config.steps)[-1]][-1].stdout)
        log(_line(config))
        shutil.rmtree(work, ignore_errors=True)
    return _report(args, manifest, configs, floor)


def _pods(args: argparse.Namespace) -> list[int]:
    return [int(n) for n in str(args.pods).split(",") if n.strip()]


def _step(source: list[str], common: list[str], stage: str, pods: int, worker: int = 0):
    # Every step of one import runs under the same import id (the operator's: the uid).
    argv = [*source, *common, "--stage", stage, "--workers", str(pods)]
    argv += ["--import-id", f"scaling-{pods}"]
    return run(argv, env={**os.environ, "JOB_COMPLETION_INDEX": str(worker)}).check()


def _line(config: Config) -> str:
    steps = ", ".join(
        f"{name} {max(m.seconds for m in ms):.1f} s"
        + (f" x{len(ms)}" if len(ms) > 1 else "")
        + f" ({', '.join(f'{m.peak_rss_mb:.0f}' for m in ms)} MB)"
        for name, ms in config.steps.items()
    )
    return (
        f"  {config.label}: wall {config.wall:.1f} s, CPU {config.cpu:.1f} s, peak "
        f"{config.peak_mb:.0f} MB per process; {steps}; load {config.load:.1f} at start"
    )


def _report(
    args: argparse.Namespace, manifest: dict, configs: list[Config], floor: Measurement
) -> int:
    one_pod, partitioned = configs[0], {c.pods: c for c in configs[1:]}
    counts = {json.dumps(c.result.get("counts"), sort_keys=True) for c in configs}
    same = len(counts) == 1 and all(c.result.get("phase") == "Succeeded" for c in configs)
    log(f"\nscaling, {args.rows:,} rows, memory limit {args.memory_limit} per process, "
        f"{os.cpu_count()} cores:")  # fmt: skip
    log(f"  floor (read_csv -> Parquet of update.csv): {floor.seconds:.1f} s")
    for config in configs:
        log(_line(config))
        log(
            f"    against one Pod: wall {config.wall / one_pod.wall:.2f}x, "
            f"CPU {config.cpu / one_pod.cpu:.2f}x; against the floor: wall "
            f"{config.wall / floor.seconds:.2f}x"
        )
    log(f"  every run's counts the same and Succeeded: {'yes' if same else 'NO'} {counts}")
    verdicts = []
    if 1 in partitioned and 4 in partitioned:
        one, four = partitioned[1], partitioned[4]
        wall, cpu = four.wall / one.wall, four.cpu / one.cpu
        verdicts = [wall <= TARGET_WALL, cpu <= TARGET_CPU]
        log(f"  4 merge Pods against 1: wall {wall:.2f}x (target {TARGET_WALL}x), "
            f"CPU {cpu:.2f}x (target {TARGET_CPU}x)")  # fmt: skip
    out = (
        OUT
        / "results"
        / (f"scaling-rows{args.rows}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "memory_limit": args.memory_limit,
                "threads": args.threads,
                "cores": os.cpu_count(),
                "load_average": os.getloadavg(),
                "input": manifest.get("files", {}).get("update.csv"),
                "floor_seconds": round(floor.seconds, 2),
                "configs": [
                    {
                        "label": c.label,
                        "pods": c.pods,
                        "load_average_at_start": round(c.load, 2),
                        "wall_seconds": round(c.wall, 2),
                        "cpu_seconds": round(c.cpu, 2),
                        "steps": {
                            name: [
                                {
                                    "seconds": round(m.seconds, 2),
                                    "cpu_seconds": round(m.cpu_seconds, 2),
                                    "peak_rss_mb": round(m.peak_rss_mb),
                                }
                                for m in ms
                            ]
                            for name, ms in c.steps.items()
                        },
                        "counts": c.result.get("counts"),
                    }
                    for c in configs
                ],
            },
            indent=2,
        )
    )
    log(f"  results: {out}")
    return 0 if same and all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
