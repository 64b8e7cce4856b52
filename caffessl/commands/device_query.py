"""``caffessl device_query``: Caffe's ``caffe device_query -gpu N`` -- what is known of each CUDA device
(Caffe::DeviceQuery's lines, from the properties torch reports). Without ``--gpu``: every device torch sees."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--gpu", help="device ids separated by ',' or 'all' (default: all)")


def device_lines(device_id: int) -> list[str]:
    """Caffe::DeviceQuery's lines for one device, those torch's properties give."""
    import torch
    prop = torch.cuda.get_device_properties(device_id)
    lines = [f"Device id:                     {device_id}",
             f"Major revision number:         {prop.major}",
             f"Minor revision number:         {prop.minor}",
             f"Name:                          {prop.name}",
             f"Total global memory:           {prop.total_memory}",
             f"Number of multiprocessors:     {prop.multi_processor_count}"]
    for label, attr in (("Warp size:                     ", "warp_size"),
                        ("Registers per multiprocessor:  ", "regs_per_multiprocessor"),
                        ("Maximum threads per SM:        ", "max_threads_per_multi_processor"),
                        ("L2 cache size:                 ", "L2_cache_size")):
        if hasattr(prop, attr):                 # newer torch versions report more
            lines.append(f"{label}{getattr(prop, attr)}")
    return lines


def run(args):
    from ..errors import DeviceError
    from ..log import get_logger, setup_logging
    from ..devices import cuda_count, gpu_ids, no_cuda
    setup_logging()
    log = get_logger()
    if not args.gpu and cuda_count() == 0:
        raise DeviceError(f"device_query: {no_cuda()}; caffessl's commands run on the CPU without --gpu")
    ids = gpu_ids(args.gpu or "all")
    log.info("Querying GPUs %s", args.gpu or "all")
    for i in ids:
        for line in device_lines(i):
            log.info("%s", line)
    return 0
