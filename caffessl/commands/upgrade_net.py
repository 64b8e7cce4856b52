"""``caffessl upgrade-net``: Caffe's upgrade_net_proto_text + upgrade_net_proto_binary in one command."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--model", required=True, help="legacy (V0/V1) or current net prototxt")
    p.add_argument("--weights", help="caffemodel to upgrade (binary NetParameter)")
    p.add_argument("--out-model", required=True, help="where to write the upgraded prototxt")
    p.add_argument("--out-weights", help="where to write the upgraded caffemodel (needs --weights)")


def upgrade_net_files(model, out_model, weights=None, out_weights=None) -> None:
    """Read a (legacy) prototxt and optionally its caffemodel, write both in the current format."""
    from ..io.atomic import atomic_write
    from ..io.caffemodel import read_net_binary
    from ..io.prototxt import read_net_prototxt, write_prototxt
    net = read_net_prototxt(model)          # upgraded on read
    write_prototxt(out_model, net)
    if weights:
        wnet = read_net_binary(weights)     # upgraded on read, blobs kept
        atomic_write(out_weights, wnet.SerializeToString())


def run(args):
    from ..errors import CaffeSSLError
    if bool(args.weights) != bool(args.out_weights):
        raise CaffeSSLError("upgrade-net: --weights and --out-weights go together")
    upgrade_net_files(args.model, args.out_model, args.weights, args.out_weights)
    print(f"wrote {args.out_model}" + (f" and {args.out_weights}" if args.out_weights else ""))
    return 0
