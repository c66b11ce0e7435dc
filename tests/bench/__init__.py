"""`make bench`: this service's throughput and latency beside a plain one-INSERT-per-request handler and the
ECO backend's seed fix, on one database, printed as one table (see `python -m tests.bench --help`)."""
