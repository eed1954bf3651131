# The lab's pytest plugin: fixtures lab, lab_topology, xdp_mode, l2fwd (see lab/plugin.py).
pytest_plugins = ["lab.plugin"]
