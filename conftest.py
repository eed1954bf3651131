# The lab's pytest plugins: the core's fixtures (lab, lab_topology, xdp_mode, xdp_program, ...)
# and the l2fwd kit's (l2fwd, dut, ...). See lab/plugin.py and lab/l2fwd/plugin.py.
pytest_plugins = ["lab.plugin", "lab.l2fwd.plugin"]
