"""What the benchmark scripts share: Fashion-MNIST subsets as upload-shaped arrays (`data`), the fp32 ResNet each
trains once and caches (`models`), and accuracy, markdown and JSON output (`report`).

Run every benchmark as a module from the repository root, e.g. `.venv/bin/python -m bench.qat.run --quick`.
"""
