"""``caffessl compute-image-mean``: Caffe's compute_image_mean tool.

  caffessl compute-image-mean INPUT_DB [OUTPUT_FILE] [--backend lmdb|leveldb]
"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("input_db", help="the LMDB / LevelDB of Datum records")
    p.add_argument("output_file", nargs="?", help="the mean as a binaryproto (omitted: only the log)")
    p.add_argument("--backend", default="lmdb", choices=["lmdb", "leveldb"],
                   help="the database's backend (Caffe's default: lmdb)")


def run(args):
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..data.image_mean import compute_image_mean
    _, count = compute_image_mean(args.input_db, args.backend, args.output_file)
    print(f"mean of {count} records" + (f" written to {args.output_file}" if args.output_file else ""))
    return 0
