"""What the tests share: ports, processes, a xend's folder and its clients, its events,
xends shared by the tests of a module, consoles and network namespaces; a module each."""
