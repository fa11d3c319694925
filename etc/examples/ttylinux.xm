#  -*- mode: python; -*-
# The ttylinux example of the Xen 2.0 users' manual (docs/src/user.tex, "Example:
# ttylinux"), as it is there: a file-backed root disk and a static IP address.
#
#   xm create -f ttylinux.xm        (-n prints the (vm ...) instead of creating it)
#
# The sim driver only records the kernel path; a real host needs that kernel and
# the ttylinux root file system image at the path in 'disk'.
kernel = "/boot/vmlinuz-2.6.9-xenU"
memory = 64
name = "ttylinux"
nics = 1
ip = "1.2.3.4"
disk = ['file:/path/to/ttylinux/rootfs,sda1,w']
root = "/dev/sda1 ro"
