"""`make bench`: the import engine against DuckDB's bare conversion and a pydantic loop.

Every measured command runs in a fresh process (start-up included) and is measured by
`bench.measure`: wall time and peak RSS of that process alone, and its instruction count
where perf can count them. Ratios compare figures from the same run only; the machine is
shared, so absolute numbers are noisy, and the instruction ratios are printed beside the
time ratios as the figure that load does not move.

Configuration (flags, or the environment for make): --rows/BENCH_ROWS (1,000,000),
--seed/BENCH_SEED, --repeat/BENCH_REPEAT (runs of the floor and of the merge, taken in
turns so a burst of load hits both alike; the best of each is kept; default 3 up to 1M
rows, 1 above), --memory-limit/BENCH_MEMORY_LIMIT (passed to the engine and the floor; default
none, 1GB from 5M rows on), --threads/BENCH_THREADS, --baseline-full/BENCH_BASELINE_FULL
(run the pydantic loop over the whole file instead of its first 100,000 records),
--skip/BENCH_SKIP (comma list of floor,baseline,engine,small).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from bench import checks, generate
from bench.measure import Measurement, run, warm

OUT = Path(os.environ.get("BENCH_OUT", Path(__file__).resolve().parent / "out"))
SMALL_ROWS = 50_000
SMALL_REPEAT = 3

# The targets from issue 2; ratios are engine seconds over floor seconds.
TARGET_FLOOR_RATIO = 2.5
TARGET_BASELINE_SPEEDUP = 10.0
TARGET_RSS_1M = 1 * 2**30
# The guide allows 2 GB at 10M rows; issue 17 asks 1.2 GB at every size: the stricter.
TARGET_RSS_10M = int(1.2 * 2**30)
TARGET_SMALL_RATIO = 2.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Figure:
    """One measured command: the best of its runs (shortest wall time)."""

    label: str
    rows: int
    runs: list[Measurement] = field(default_factory=list)
    detail: dict = field(default_factory=dict)
    note: str = ""

    @property
    def best(self) -> Measurement:
        return min(self.runs, key=lambda m: m.seconds)

    @property
    def seconds(self) -> float:
        return self.best.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def peak_rss(self) -> int:
        return max(m.peak_rss_bytes for m in self.runs)

    @property
    def instructions(self) -> int | None:
        """The fewest instructions over the runs (they differ by a fraction of a percent)."""
        counts = [m.instructions for m in self.runs if m.instructions is not None]
        return min(counts) if counts else None

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "all_seconds": [round(m.seconds, 3) for m in self.runs],
            "rows_per_s": round(self.rows_per_s),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "instructions": self.instructions,
            "argv": self.best.argv,
            "detail": self.detail,
            "note": self.note,
        }


def engine_command(args: argparse.Namespace) -> list[str] | None:
    """The engine's CLI, or None while it is not installed/working yet."""
    candidate = args.engine or str(Path(sys.executable).with_name("productimport"))
    if not Path(candidate).exists():
        return None
    probe = run([candidate, "--help"])
    return [candidate] if probe.returncode == 0 and "import" in probe.stdout else None


def engine_import(
    args: argparse.Namespace, engine: list[str], source: Path, store: Path, rows: int
) -> Measurement:
    argv = [*engine, "import", str(source), "--catalog", "bench", "--store", str(store)]
    # The default error policy (1000 errors) would fail a 1M-row file with 0.5% bad rows;
    # the ratio limit (5%) still applies.
    argv += ["--max-errors", str(rows), "--json"]
    if args.memory_limit:
        argv += ["--memory-limit", args.memory_limit]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return run(argv).check()


def result_of(measurement: Measurement) -> dict:
    document = json.loads(measurement.stdout)
    if document.get("phase") != "Succeeded":
        raise RuntimeError(f"import did not succeed: {document.get('message')}")
    return document


def floor_argv(args: argparse.Namespace, source: Path, target: Path) -> list[str]:
    argv = [sys.executable, "-m", "bench.floor", str(source), str(target)]
    if args.memory_limit:
        argv += ["--memory-limit", args.memory_limit]
    return argv


class FloorRuns:
    """The floor of the large file, one run at a time (taken in turns with the merge)."""

    def __init__(self, args: argparse.Namespace, source: Path, rows: int) -> None:
        self.figure = Figure("floor: DuckDB read_csv -> Parquet (zstd)", rows)
        self.target = OUT / "tmp" / f"floor-{source.stem}.parquet"
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.argv = floor_argv(args, source, self.target)

    def __call__(self) -> None:
        log(f"floor: converting update.csv (run {len(self.figure.runs) + 1}) ...")
        warm(self.source)  # the merge that follows reads it warm too
        self.figure.runs.append(run(self.argv).check())
        self.target.unlink(missing_ok=True)
        self.figure.detail = json.loads(self.figure.best.stdout)
        self.figure.detail["conversion_rows_per_s"] = round(
            self.figure.rows / self.figure.detail["seconds"]
        )


def baseline_figure(directory: Path, manifest: dict, full: bool) -> Figure:
    files = manifest["files"]
    name = "update.csv" if full or "update-100k.csv" not in files else "update-100k.csv"
    rows = files[name]["rows"]
    target = OUT / "tmp" / "baseline.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.baseline", str(directory / name), str(target)]
    figure = Figure(f"baseline: csv + pydantic per row ({name})", rows)
    figure.runs.append(run(argv).check())
    figure.detail = json.loads(figure.best.stdout)
    expected = files[name]["expected"]["rejected"]
    figure.detail["expected_rejected"] = expected
    full_rows = files["update.csv"]["rows"]
    if rows < full_rows:
        figure.note = (
            f"measured on the first {rows:,} records; the full file would take "
            f"~{full_rows / figure.rows_per_s:.0f} s at this rate (extrapolated)"
        )
    if figure.detail["rejected"] != expected:
        figure.note += (
            f"{'; ' if figure.note else ''}it rejected {figure.detail['rejected']} records "
            f"where {expected} are invalid (the csv module accepts broken quoting)"
        )
    for suffix in ("", ".errors.csv"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    return figure


def engine_figures(
    args: argparse.Namespace,
    engine: list[str],
    directory: Path,
    manifest: dict,
    before_each_merge: Callable[[], None],
) -> tuple[Figure, Figure]:
    files = manifest["files"]
    stores = OUT / "stores" / f"rows{args.rows}"
    template = stores / "after-base"
    shutil.rmtree(stores, ignore_errors=True)
    stores.mkdir(parents=True)

    base = Figure("engine: initial import of base.csv (empty catalog)", files["base.csv"]["rows"])
    log("engine: importing base.csv into an empty catalog ...")
    base.runs.append(engine_import(args, engine, directory / "base.csv", template, base.rows))
    document = result_of(base.best)
    base.detail = {"counts": document["counts"], "catalogVersion": document["catalogVersion"]}
    base.note = checks.counts(document, files["base.csv"]["expected"])

    update = Figure("engine: merge update.csv into the catalog", files["update.csv"]["rows"])
    for attempt in range(args.repeat):
        before_each_merge()
        work = stores / f"run{attempt}"
        shutil.copytree(template, work)
        log(f"engine: merging update.csv (run {attempt + 1}/{args.repeat}) ...")
        update.runs.append(engine_import(args, engine, directory / "update.csv", work, update.rows))
        document = result_of(update.runs[-1])
        update.detail = {
            "counts": document["counts"],
            "catalogVersion": document["catalogVersion"],
            "errorsRef": document.get("errorsRef"),
        }
        update.note = checks.counts(document, files["update.csv"]["expected"])
        update.note += "; " + checks.error_lines(work, document, generate.invalid_lines(directory))
        if not args.keep:
            shutil.rmtree(work)
    return base, update


def small_figures(
    args: argparse.Namespace, engine: list[str] | None, directory: Path, manifest: dict
) -> tuple[Figure, Figure | None]:
    name = "update-50k.csv" if "update-50k.csv" in manifest["files"] else "update.csv"
    info = manifest["files"][name]
    source = directory / name
    floor = Figure(f"floor: DuckDB read_csv -> Parquet ({name})", info["rows"])
    eng = Figure(f"engine: import {name} (empty catalog)", info["rows"]) if engine else None
    target = OUT / "tmp" / "floor-small.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    stores = OUT / "stores" / "small"
    # Interleaved, so a burst of load on the shared machine hits both sides alike.
    for attempt in range(max(SMALL_REPEAT, args.repeat)):
        floor.runs.append(run(floor_argv(args, source, target)).check())
        target.unlink(missing_ok=True)
        if eng is not None and engine is not None:
            shutil.rmtree(stores, ignore_errors=True)
            log(f"engine: importing {name} (run {attempt + 1}) ...")
            eng.runs.append(engine_import(args, engine, source, stores, eng.rows))
            document = result_of(eng.runs[-1])
            eng.detail = {"counts": document["counts"]}
            eng.note = checks.counts(document, info["expected"])
            eng.note += "; " + checks.error_lines(
                stores, document, generate.invalid_lines(directory, info["rows"])
            )
    floor.detail = json.loads(floor.best.stdout)
    shutil.rmtree(stores, ignore_errors=True)
    return floor, eng


def fmt_figure(figure: Figure) -> str:
    line = (
        f"  {figure.label:<58} {figure.seconds:8.2f} s {figure.rows_per_s:>11,.0f} rows/s "
        f"{figure.peak_rss / 2**20:8.0f} MB"
    )
    if figure.instructions is not None:
        line += f" {figure.instructions / 1e9:7.1f} G instr"
    if len(figure.runs) > 1:
        line += (
            f"   (best of {len(figure.runs)}: "
            + ", ".join(f"{m.seconds:.2f}" for m in figure.runs)
            + ")"
        )
    if figure.note:
        line += f"\n  {'':<4}{figure.note}"
    return line


def instruction_ratio(figure: Figure, floor: Figure) -> str:
    if figure.instructions is None or floor.instructions is None:
        return ""
    return f"  (instructions: {figure.instructions / floor.instructions:.2f}x)"


def verdict(ok: bool) -> str:
    return "MET " if ok else "MISS"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(env("BENCH_ROWS", "1000000")))
    parser.add_argument("--seed", type=int, default=int(env("BENCH_SEED", generate.DEFAULT_SEED)))
    parser.add_argument("--repeat", type=int, default=int(env("BENCH_REPEAT", "0")) or None)
    parser.add_argument("--memory-limit", default=env("BENCH_MEMORY_LIMIT") or None)
    parser.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "0")) or None)
    parser.add_argument(
        "--baseline-full", action="store_true", default=env("BENCH_BASELINE_FULL") == "1"
    )
    parser.add_argument("--skip", default=env("BENCH_SKIP", ""))
    parser.add_argument("--engine", default=env("BENCH_ENGINE"), help="path to productimport")
    parser.add_argument("--keep", action="store_true", help="keep the merged stores")
    args = parser.parse_args(argv)
    if args.memory_limit is None and args.rows >= 5_000_000:
        args.memory_limit = "1GB"
    if args.repeat is None:
        args.repeat = 3 if args.rows <= 1_000_000 else 1
    args.skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    directory, manifest = generate.ensure(args.rows, args.seed, log=log)
    files = manifest["files"]
    engine = None if "engine" in args.skip else engine_command(args)
    if engine is None and "engine" not in args.skip:
        log("engine: `productimport import` is not available yet; measuring the rest")

    figures: dict[str, Figure | None] = {}
    floor_runs = (
        None if "floor" in args.skip else FloorRuns(args, directory / "update.csv", args.rows)
    )
    if "baseline" not in args.skip:
        log("baseline: csv + pydantic ...")
        figures["baseline"] = baseline_figure(directory, manifest, args.baseline_full)
    if engine is not None:
        figures["engine_base"], figures["engine"] = engine_figures(
            args, engine, directory, manifest, floor_runs or (lambda: None)
        )
    elif floor_runs is not None:
        for _ in range(args.repeat):
            floor_runs()
    if floor_runs is not None:
        figures["floor"] = floor_runs.figure
    if "small" not in args.skip:
        figures["small_floor"], figures["small_engine"] = small_figures(
            args, engine, directory, manifest
        )

    upd = files["update.csv"]
    invalid = upd["expected"]["rejected"]
    lines = [
        "",
        f"productimport engine benchmark  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  "
        f"{os.cpu_count()} CPUs  DuckDB {duckdb.__version__}  Python {platform.python_version()}",
        f"command: {' '.join(['python -m bench', *(argv if argv is not None else sys.argv[1:])])}"
        f"  rows={args.rows:,} repeat={args.repeat} memory_limit={args.memory_limit or '-'}"
        f" threads={args.threads or '-'}",
        f"input: {directory}",
        f"  update.csv {upd['rows']:,} records, {upd['bytes'] / 2**20:,.0f} MiB, "
        f"{invalid:,} invalid ({invalid / upd['rows']:.2%}); merges into base.csv "
        f"({files['base.csv']['rows']:,} products): expected {upd['expected']}",
        "",
        f"{args.rows:,}-row update file (fresh process each, start-up included)",
    ]
    for key in ("floor", "baseline", "engine_base", "engine"):
        if figures.get(key):
            lines.append(fmt_figure(figures[key]))  # type: ignore[arg-type]
    if figures.get("small_floor"):
        lines += ["", "50,000-row file, imported into an empty catalog (process start included)"]
        for key in ("small_floor", "small_engine"):
            if figures.get(key):
                lines.append(fmt_figure(figures[key]))  # type: ignore[arg-type]

    targets: list[dict] = []
    baseline, eng = figures.get("baseline"), figures.get("engine")
    floor = figures.get("floor")
    if eng and floor:
        ratio = eng.seconds / floor.seconds
        targets.append(
            {
                "target": f"merge within {TARGET_FLOOR_RATIO}x of the floor",
                "value": f"{ratio:.2f}x{instruction_ratio(eng, floor)}",
                "met": ratio <= TARGET_FLOOR_RATIO,
            }
        )
    if eng and baseline:
        speedup = eng.rows_per_s / baseline.rows_per_s
        targets.append(
            {
                "target": f">= {TARGET_BASELINE_SPEEDUP:.0f}x the pydantic baseline",
                "value": f"{speedup:.1f}x",
                "met": speedup >= TARGET_BASELINE_SPEEDUP,
            }
        )
    if eng:
        limit = TARGET_RSS_10M if args.rows >= 5_000_000 else TARGET_RSS_1M
        targets.append(
            {
                "target": f"peak RSS < {limit / 2**30:.1f} GB",
                "value": f"{eng.peak_rss / 2**20:.0f} MB",
                "met": eng.peak_rss < limit,
            }
        )
    small_floor, small_eng = figures.get("small_floor"), figures.get("small_engine")
    if small_floor and small_eng:
        ratio = small_eng.seconds / small_floor.seconds
        targets.append(
            {
                "target": f"50k rows within {TARGET_SMALL_RATIO:.0f}x of the floor",
                "value": f"{ratio:.2f}x{instruction_ratio(small_eng, small_floor)}",
                "met": ratio <= TARGET_SMALL_RATIO,
            }
        )
    if targets:
        lines += ["", "targets (issue 2)"]
        lines += [f"  [{verdict(t['met'])}] {t['target']:<42} {t['value']}" for t in targets]
    lines.append(
        f"\ntotal bench time {time.monotonic() - started:.0f} s; numbers are noisy "
        "(shared 2-core machine), ratios compare runs of this same invocation"
    )
    print("\n".join(lines), flush=True)

    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "duckdb": duckdb.__version__,
        "input": {"directory": str(directory), "files": files},
        "figures": {k: v.as_dict() for k, v in figures.items() if v is not None},
        "targets": targets,
    }
    results_dir = OUT / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"rows{args.rows}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    shutil.copyfile(path, results_dir / f"latest-rows{args.rows}.json")
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
