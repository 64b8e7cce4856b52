"""Data sources behind the data layers: HDF5 files, LMDB Datum records, image lists; Caffe's
``transform_param`` (DataTransformer); a background batch prefetcher; dataset converters (MNIST, imageset)."""
