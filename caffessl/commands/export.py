"""``caffessl export onnx``: write a deploy net with its weights as an ONNX model."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("format", choices=["onnx"], help="export format")
    p.add_argument("--model", required=True, help="deploy prototxt")
    p.add_argument("--weights", help="caffemodel (binary or .h5); without it the fillers' weights are exported")
    p.add_argument("--out", required=True, help="output file (net.onnx)")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset (13 or later)")
    p.add_argument("--strict", action="store_true", help="the weights must match the net's layers exactly")


def run(args):
    from ..errors import ExportError
    from ..export.deploy_check import check_deploy
    from ..export.onnx import export
    from ..net import TEST, Net
    if args.opset < 13:
        raise ExportError(f"--opset {args.opset}: caffessl exports opset 13 or later")
    check_deploy(args.model, TEST)
    net = Net(args.model, TEST)
    if args.weights:
        for w in args.weights.split(","):
            net.copy_from(w, strict=args.strict)
    model = export(net, args.out, opset=args.opset)
    print(f"wrote {args.out}: {len(model.graph.node)} nodes, inputs "
          f"{[i.name for i in model.graph.input]}, outputs {[o.name for o in model.graph.output]}")
    return 0
