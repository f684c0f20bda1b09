"""Write the generated photo test sets to disk: one folder per condition (PNG files and
labels.csv), plus `numbers` (3-5 digit numbers read whole). No MNIST in them: digits come
from stroke templates, Liberation fonts and scikit-learn's 8x8 digits (see mnistlab.reading.photos).

    python scripts/make_photos.py --out photos --per-condition 200 --numbers 200
    mnistlab predict photos/mixed/0000.png --steps --save steps.png
    mnistlab read photos/numbers/0000.png --save boxes.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlab.reading.photos import CONDITIONS, make_set, write_set


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("photos"), help="folder to write (default: photos/)")
    p.add_argument("--per-condition", type=int, default=200, help="single-digit photos per condition")
    p.add_argument("--numbers", type=int, default=200, help="photos of numbers")
    p.add_argument("--seed", type=int, default=1000, help="seed (the README's table uses 1000)")
    p.add_argument("--only", nargs="*", help="conditions to write (default: all and numbers)")
    args = p.parse_args()
    for c in args.only or [*CONDITIONS, "numbers"]:
        n = args.numbers if c == "numbers" else args.per_condition
        folder = write_set(args.out / c, make_set(c, n, seed=args.seed))
        print(f"{folder}: {n} photos")


if __name__ == "__main__":
    main()
