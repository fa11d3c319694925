"""xend-actors: a re-build of Xen's xend node daemon on pykka actors."""

from setuptools import find_packages, setup

setup(
    name="xend-actors",
    version="0.1.0",
    description="Xen's xend node daemon re-built with pykka actors",
    python_requires=">=3.11",
    packages=find_packages(include=["xend_actors", "xend_actors.*"]),
    package_data={"xend_actors.web": ["templates/*.html", "static/*"]},
    install_requires=[
        "pykka>=4.0,<5",
        "cryptography>=38",
        "python-pam>=2.0,<3",
        "wsproto>=1.2,<2",  # the consoles' WebSockets (web/websocket.py, xm console)
        "werkzeug>=3.0,<4",
        "h11>=0.14,<1",  # the HTTP server's protocol (web/http_connection.py)
        "pyroute2>=0.9,<0.10",
        "python-daemon>=3.0,<4",
        "jinja2>=3.1,<4",
        "click>=8.1,<9",
        "isal>=1.6,<2",  # save files' CRC-32, several times faster (transfer/checksum.py)
        # GET /metrics (web/metrics.py), imported at its first read; 0.22 on escapes every
        # name for UTF-8, half again the CPU a line (33 ms a scrape of 1000 domains, not 21)
        "prometheus-client>=0.20,<0.22",
        # a pool's etcd (pool/etcd.py), over etcd's JSON gateway: no gRPC, no C extension
        # in a daemon that forks; imported only by a xend in a pool
        "etcd3gw>=2.4,<3",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "ruff>=0.5",
                 "httpx>=0.27,<1",  # the tests' and benchmarks' HTTP client
                 "mypy>=2.4,<3", "playwright>=1.40,<2"],
    },
    entry_points={
        "console_scripts": [
            "xend = xend_actors.cli:main",
            "xm = xend_actors.xm.main:main",
            "xend-simhv = xend_actors.hypervisor.sim.server:main",
            "xend-fence = xend_actors.pool.watchdog:main",  # a pool member's fencing watchdog
        ],
    },
)
