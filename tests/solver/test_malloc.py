"""caffessl.malloc: blobs keep the last iteration's tensors (Caffe semantics); glibc's adaptive thresholds then
return the freed pages to the kernel and fault them in again at every iteration. With the thresholds fixed, a
training step page-faults (almost) never."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS = textwrap.dedent('''
    import resource
    import caffessl
    from caffessl.io import parse_text
    from caffessl.proto import caffe_pb2
    from caffessl.malloc import keep_freed_memory
    sp = parse_text("""net_param { name: "lenet"
      layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {
        shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } data_filler { type: "uniform" }
        data_filler { type: "constant" value: 1 } } }
      layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
      layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
      layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
      layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
      layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
      layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" } }
      base_lr: 0.001 momentum: 0.9 lr_policy: "fixed" max_iter: 100 display: 0 snapshot_after_train: false""",
      caffe_pb2.SolverParameter())
    solver = caffessl.SGDSolver(sp)
    solver.step(10)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    solver.step(30)
    print(keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 30)
''')


def _faults_per_step(keep: bool):
    env = dict(os.environ, CAFFESSL_KEEP_FREED_MEMORY="1" if keep else "0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", STEPS], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    flag, faults = out.stdout.split()
    return flag == "True", float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
                    reason="the malloc thresholds are glibc's")
def test_training_steps_do_not_refault_freed_activations():
    kept, with_fix = _faults_per_step(True)
    assert kept
    # 0 on a quiet machine (up to ~25 seen while other tests ran); glibc's default gives 180-430 here
    assert with_fix <= 60, f"{with_fix} minor page faults per step with the thresholds fixed"
    off, without = _faults_per_step(False)
    assert not off
    # the control: glibc's default behaviour is what the fix is for. Its dynamic mmap threshold makes that
    # behaviour depend on the allocation history (a fresh clone's first CI run once gave 0.07 faults/step),
    # so a run where the default does not refault has nothing to compare and says so.
    if without <= 3 * with_fix + 30:
        pytest.skip(f"glibc's default allocator did not refault in this run ({without:.2f} faults/step, "
                    f"{with_fix:.2f} with the fix): the control shows no difference to measure")
