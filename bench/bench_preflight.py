"""Benchmark `sever train`'s pre-flight image check at the real dataset's size.

Writes 400 synthetic 256x1600 JPEGs (`sever synth`) into a temporary folder and copies
them to 12,568 distinct files, the competition's training set. Then, in the same run:

- the pre-flight check as `sever train` runs it: `check_images` over every image, which
  reads each file's header (size) and its last bytes (a JPEG's end marker), 4 threads;
- the baseline: decoding every image in full with `read_gray` (what `check-data` does,
  4 threads), timed on a sample and scaled to 12,568.

The page cache is warm for both (the files were just written); a cold disk adds its read
time to both. Run from the repo root:

    .venv/bin/python bench/bench_preflight.py [--images 12568] [--sample 1000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sever.data.checks import check_images
from sever.data.synth import generate
from sever.fileio import read_gray

SIZE = (256, 1600)


def make_images(folder: Path, count: int) -> list[str]:
    """`count` JPEG files in `folder/train_images`, copies of 400 synthetic images."""
    generate(folder / "synth", n_train=400, n_test=0, height=SIZE[0], width=SIZE[1], seed=0)
    sources = sorted((folder / "synth" / "train_images").iterdir())
    images = folder / "train_images"
    images.mkdir()
    names = [f"{i:09x}.jpg" for i in range(count)]
    for i, name in enumerate(names):
        shutil.copyfile(sources[i % len(sources)], images / name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_568)
    parser.add_argument("--sample", type=int, default=1000, help="images decoded in full")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = make_images(folder, args.images)
        images = folder / "train_images"
        check_images(images, names[:50], SIZE)  # imports and thread start-up
        started = time.perf_counter()
        check_images(images, names, SIZE)
        header = time.perf_counter() - started
        sample = names[: args.sample]
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: read_gray(images / n).shape, sample))
        decode = (time.perf_counter() - started) * len(names) / len(sample)
    print(f"{len(names)} images of {SIZE[0]}x{SIZE[1]} (JPEG, warm page cache)")
    print(
        f"  pre-flight (headers + JPEG end marker)  {header:7.2f} s  "
        f"{header / len(names) * 1e3:.3f} ms/image"
    )
    print(
        f"  full decode (baseline, scaled)          {decode:7.2f} s  "
        f"{decode / len(names) * 1e3:.3f} ms/image"
    )
    print(f"  the pre-flight takes {header / decode:.1%} of a full decode")


if __name__ == "__main__":
    main()
