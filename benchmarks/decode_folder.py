"""Decoding a tar of JPEG files: ImageFolder (mlx-data threads) vs a Pillow thread pool.

Speed: every image of the archive is decoded into one ``uint8`` N×H×W×3 array, by
``ImageFolder(archive).to_arrays()`` and by Pillow (``Image.open(...).convert("RGB")``) in a
``ThreadPoolExecutor`` with as many threads. ImageFolder reads the members from the archive as it
decodes; Pillow gets them already in memory (read with ``tarfile`` before the clock starts), so
the comparison favours Pillow. Indexing the archive (``ImageFolder(archive)``) is timed on its
own. The methods alternate, ``--repeats`` rounds; each row is the median.

Memory (measured first, while this process is small): peak resident memory of a fresh process
that (a) only indexes the archive, (b) streams every image once with ``batches()``, (c) loads
everything with ``to_arrays()``. Usage::

    python benchmarks/decode_folder.py path/to/cifar10-jpeg/train.tar [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import mlxvision
from mlxvision.data.datasets.folder import ImageFolder


def peak_rss_bytes() -> int:
    """This process's peak resident memory (on Linux ``VmHWM``, which starts afresh at exec;
    ``ru_maxrss`` there also counts the parent's memory at fork)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def read_members(archive: str, names: list[str]) -> list[bytes]:
    with tarfile.open(archive) as tar:
        return [tar.extractfile(name).read() for name in names]  # type: ignore[union-attr]


def pillow_decoder(blobs: list[bytes], threads: int) -> Callable[[], np.ndarray]:
    from PIL import Image

    def decode_range(out: np.ndarray, start: int, stop: int) -> None:
        for i in range(start, stop):
            with Image.open(io.BytesIO(blobs[i])) as image:
                out[i] = np.asarray(image.convert("RGB"))

    def run() -> np.ndarray:
        with Image.open(io.BytesIO(blobs[0])) as first:
            shape = np.asarray(first.convert("RGB")).shape
        out = np.empty((len(blobs), *shape), np.uint8)
        chunk = 256
        with ThreadPoolExecutor(threads) as pool:
            jobs = [
                pool.submit(decode_range, out, s, min(s + chunk, len(blobs)))
                for s in range(0, len(blobs), chunk)
            ]
            for job in jobs:
                job.result()
        return out

    return run


def measure_memory(archive: str, variant: str, threads: int) -> dict[str, float]:
    """Run in a fresh process: what one variant costs in time and peak memory."""
    began = time.perf_counter()
    folder = ImageFolder(archive, num_threads=threads)
    if variant == "stream":
        count = 0
        for images, _ in folder.batches(256):
            count += int(images.shape[0])
        assert count == len(folder)
    elif variant == "arrays":
        assert len(folder.to_arrays()) == len(folder)
    return {"seconds": time.perf_counter() - began, "peak_rss": peak_rss_bytes()}


def memory_row(archive: str, variant: str, threads: int) -> dict[str, float]:
    command = [sys.executable, __file__, archive, "--threads", str(threads), "--memory", variant]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", help="a .tar of <top>/<class>/<image> JPEG files")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", choices=["index", "stream", "arrays"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(measure_memory(args.archive, args.memory, args.threads)))
        return
    import mlx.data
    import PIL

    load_before = os.getloadavg()
    memory = {v: memory_row(args.archive, v, args.threads) for v in ["index", "stream", "arrays"]}
    index_times, folder_rates, pillow_rates = [], [], []
    folder = ImageFolder(args.archive, num_threads=args.threads)
    blobs = read_members(args.archive, [name for name, _ in folder.samples])
    pillow = pillow_decoder(blobs, args.threads)
    reference = pillow()  # warm-up, and the pixels to compare with
    decoded = folder.to_arrays().images
    mean_difference = float(np.abs(decoded.astype(np.int16) - reference).mean())
    n = len(folder)
    for _ in range(args.repeats):
        began = time.perf_counter()
        folder = ImageFolder(args.archive, num_threads=args.threads)
        index_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        folder.to_arrays()
        folder_rates.append(n / (time.perf_counter() - began))
        began = time.perf_counter()
        pillow()
        pillow_rates.append(n / (time.perf_counter() - began))
    load_after = os.getloadavg()

    shape = "×".join(map(str, decoded.shape[1:]))
    print(
        f"Decoding {n:,} JPEG images ({shape}) from {os.path.basename(args.archive)} with "
        f"{args.threads} threads; mlx-data {getattr(mlx.data, '__version__', '?')}, Pillow "
        f"{PIL.__version__}, numpy {np.__version__}, mlxvision {mlxvision.__version__}, "
        f"{platform.machine()} with {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after. Mean |ImageFolder − Pillow| "
        f"= {mean_difference:.3f} levels.\n"
    )
    folder_rate, pillow_rate = statistics.median(folder_rates), statistics.median(pillow_rates)
    print("| decoder | images/s (median) | min – max | × Pillow | repeats |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rates, rate in [
        ("ImageFolder.to_arrays() (mlx-data, reads the tar)", folder_rates, folder_rate),
        ("Pillow, thread pool (members already in memory)", pillow_rates, pillow_rate),
    ]:
        print(
            f"| {name} | {rate:,.0f} | {min(rates):,.0f} – {max(rates):,.0f} | "
            f"{rate / pillow_rate:.2f} | {args.repeats} |"
        )
    print(
        f"\nIndexing the archive (`ImageFolder(archive)`): {statistics.median(index_times):.2f} s "
        f"(median of {args.repeats}).\n"
    )
    print("| fresh process | peak resident memory | seconds |")
    print("| --- | ---: | ---: |")
    for variant, label in [
        ("index", "import + `ImageFolder(archive)` only"),
        ("stream", "+ one pass of `batches(256)`"),
        ("arrays", "+ `to_arrays()`"),
    ]:
        row = memory[variant]
        print(f"| {label} | {row['peak_rss'] / 2**20:,.0f} MiB | {row['seconds']:.1f} |")


if __name__ == "__main__":
    main()
