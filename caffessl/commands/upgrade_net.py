"""``caffessl upgrade-net``: Caffe's upgrade_net_proto_text + upgrade_net_proto_binary in one command."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--model", required=True, help="legacy (V0/V1) or current net prototxt")
    p.add_argument("--weights", help="caffemodel to upgrade (binary NetParameter)")
    p.add_argument("--out-model", required=True, help="where to write the upgraded prototxt")
    p.add_argument("--out-weights", help="where to write the upgraded caffemodel (needs --weights)")


def run(args):
    from ..errors import CaffeSSLError
    from ..io.upgrade_legacy import upgrade_net_files
    if bool(args.weights) != bool(args.out_weights):
        raise CaffeSSLError("upgrade-net: --weights and --out-weights go together")
    upgrade_net_files(args.model, args.out_model, args.weights, args.out_weights)
    print(f"wrote {args.out_model}" + (f" and {args.out_weights}" if args.out_weights else ""))
    return 0
