"""Host networking scripts of xend: the ``network`` and ``vif-bridge`` scripts.

The executables in ``netscripts/`` are thin wrappers around this package:

* :mod:`.bridge`    -- ``network start|stop|status`` and ``vif-bridge up|down|status``
* :mod:`.antispoof` -- the per-vif source address filter (tc ingress + cls_bpf)
* :mod:`.ebpf`      -- a tiny eBPF assembler and the bpf(2) loader
* :mod:`.cli`       -- ``key=value`` argument words, one-line errors, exit codes

Everything talks netlink through pyroute2's ``IPRoute``; no shell, no tc/brctl/iptables.
"""
