from setuptools import find_packages, setup

setup(
    name="caffessl",
    version="0.1.0",
    description="Caffe-compatible training and inference engine for Structured Sparsity Learning, on PyTorch",
    packages=find_packages(include=["caffessl", "caffessl.*"]),
    package_data={"caffessl": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "protobuf>=7.35.1",   # the generated caffe_pb2 is stamped 7.35.1 (see tools/gen_proto.py)
        "torch==2.13.0",      # exact pin: a looser one pulls the CUDA build
        "onnx",
        "mkl",
        "pyyaml",
        "lmdb",
        "plyvel",             # LevelDB data sources (DataParameter.backend defaults to LEVELDB)
        "h5py",
        "Pillow",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "onnxruntime", "matplotlib", "hypothesis",  # matplotlib: plot tests; hypothesis: fuzz
                 "grpcio-tools==1.85.1"],  # the protoc that generated caffe_pb2 (staleness test)
        "plot": ["matplotlib"],
        "proto": ["grpcio-tools"],
    },
    entry_points={"console_scripts": ["caffessl=caffessl.cli:main"]},
)
