"""The simulated hypervisor: xend-simhv, a separate process, and its driver."""
