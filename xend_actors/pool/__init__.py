"""The pool: many xends, one view, on etcd — the members' shared state, pool-wide
names, placement, and restarting HA domains whose host is gone."""
