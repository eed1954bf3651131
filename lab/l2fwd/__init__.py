"""The l2fwd kit: the seed notes' forwarder (fast_l2fwd), built only on the core's public API.

    forwarder   L2fwd (typed helpers: route, set_txport, verdicts, ...), its variants, FWD
    seed        the seed's topology, addresses, MACs and Go struct layouts
    repro       the seed's cases of vanishing frames (`python -m lab repro`)
    plugin      its pytest fixtures: l2fwd, dut, l2fwd_kind, l2fwd_program, l2fwd_peer
"""
