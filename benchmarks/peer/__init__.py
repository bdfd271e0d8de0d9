"""The parts of the peer comparison with FuxiCTR (benchmarks/peer_fuxictr.py); the FuxiCTR
side itself, fuxictr_runner.py, runs in the peer environment and imports none of them."""
