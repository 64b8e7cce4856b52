"""``caffessl convert``: dataset converters, like Caffe's convert_mnist_data and convert_imageset tools.

  caffessl convert mnist --from DIR --out DIR [--backend lmdb|leveldb]
                                                   -> DIR/mnist_train_<backend>, DIR/mnist_test_<backend>
  caffessl convert imageset ROOT LISTFILE DB_NAME [--resize_height H --resize_width W --shuffle --gray
                                                    --encoded --encode_type png --check_size --backend lmdb]
"""
from __future__ import annotations


def add_arguments(p):
    sub = p.add_subparsers(dest="dataset", metavar="DATASET")
    m = sub.add_parser("mnist", help="MNIST IDX files (plain or .gz) -> two LMDBs (or LevelDBs) of raw Datums")
    m.add_argument("--from", dest="src", required=True, help="folder with the 4 MNIST IDX files")
    m.add_argument("--out", required=True, help="folder for mnist_{train,test}_<backend>")
    m.add_argument("--limit", type=int, default=None, help="convert only the first N items of each split")
    m.add_argument("--backend", default="lmdb", choices=["lmdb", "leveldb"])
    i = sub.add_parser("imageset", help='a "path label" list of images -> an LMDB/LevelDB of Datum records')
    i.add_argument("root", help="prefix prepended to every path of the list (as is: keep the trailing /)")
    i.add_argument("listfile", help='text file: "path label" per line')
    i.add_argument("db_name", help="the database to create")
    i.add_argument("--resize_height", type=int, default=0)
    i.add_argument("--resize_width", type=int, default=0)
    i.add_argument("--shuffle", action="store_true", help="randomly shuffle the order of images")
    i.add_argument("--gray", action="store_true", help="store the images in grey (1 channel)")
    i.add_argument("--encoded", action="store_true", help="store the encoded image bytes in the Datum")
    i.add_argument("--encode_type", default="", help="re-encode as png/jpg... (implies --encoded)")
    i.add_argument("--check_size", action="store_true", help="check that all raw Datums have the same size")
    i.add_argument("--backend", default="lmdb", choices=["lmdb", "leveldb"])
    i.add_argument("--seed", type=int, default=None, help="seed of --shuffle")


def run(args):
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dataset == "mnist":
        from ..data.mnist import convert_mnist
        paths = convert_mnist(args.src, args.out, args.limit, args.backend)
        print(f"wrote {paths['train']} and {paths['test']}")
        return 0
    if args.dataset == "imageset":
        from ..data.imageset import convert_imageset
        n = convert_imageset(args.root, args.listfile, args.db_name, args.resize_height, args.resize_width,
                             args.shuffle, args.gray, args.encoded, args.encode_type, args.check_size, args.seed,
                             args.backend)
        print(f"wrote {n} records to {args.db_name}")
        return 0
    print("caffessl convert: choose a dataset: mnist or imageset")
    return 2
