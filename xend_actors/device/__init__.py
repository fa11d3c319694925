"""Devices: the vbd and vif configs, their controllers (control messages to the backends),
the block claims, vnets and the one owner of netlink inside xend."""
