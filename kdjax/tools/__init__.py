"""Tools beside the library: the offline demo (demo.py), the transfer miniature's stages
(transfer.py), the benchmark (bench.py, bench_rows.py) with its PyTorch eager twin
(torch_reference.py), and the cost accounting of a finished run (cost.py)."""
