"""A tiny eBPF assembler and the bpf(2) ``BPF_PROG_LOAD`` call through ctypes.

An instruction is 8 bytes (``struct bpf_insn``, little endian here)::

    u8  code      class | size/op | mode/source
    u8  regs      dst_reg (low 4 bits) | src_reg << 4
    s16 off       jump offset, counted in instructions after this one
    s32 imm       immediate

Opcodes used (``include/uapi/linux/bpf.h`` / ``bpf_common.h``):

=============  =====  ========================================================
class          value  meaning
=============  =====  ========================================================
BPF_LD         0x00   legacy packet loads: ``| BPF_ABS`` (0x20) / ``| BPF_IND``
                      (0x40) with size W 0x00, H 0x08, B 0x10; r0 = big-endian
                      value at skb data + imm (+ src_reg for IND); r6 must hold
                      the skb; r1-r5 are clobbered; out of bounds = exit 0
BPF_ALU        0x04   32-bit ALU (upper half of dst zeroed)
BPF_JMP        0x05   64-bit compare jumps, ``BPF_EXIT`` 0x90
BPF_JMP32      0x06   32-bit compare jumps (no sign-extension trouble with imm)
BPF_ALU64      0x07   64-bit ALU
=============  =====  ========================================================

ALU ops: AND 0x50, LSH 0x60, MOV 0xb0; jump ops: JA 0x00, JEQ 0x10, JNE 0x50,
EXIT 0x90; source: K (imm) 0x00, X (src_reg) 0x08.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import struct
from dataclasses import dataclass

BPF_LD, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = 0x00, 0x04, 0x05, 0x06, 0x07
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS, BPF_IND = 0x20, 0x40
BPF_AND, BPF_LSH, BPF_MOV = 0x50, 0x60, 0xB0
BPF_JA, BPF_JEQ, BPF_JNE, BPF_EXIT = 0x00, 0x10, 0x50, 0x90
BPF_K, BPF_X = 0x00, 0x08

BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SCHED_CLS = 3

_SIZES = {"W": BPF_W, "H": BPF_H, "B": BPF_B}
_JUMPS = {"==": BPF_JEQ, "!=": BPF_JNE}
# bpf(2) syscall numbers by machine
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "i386": 357, "i686": 357, "armv7l": 386,
            "ppc64le": 361, "s390x": 351, "riscv64": 280}


class BpfError(Exception):
    """Assembling or loading an eBPF program failed."""


@dataclass
class _Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    label: str | None = None  # jump target, resolved by Assembler.assemble


class Assembler:
    """Builds a program instruction by instruction; jumps go to named labels."""

    def __init__(self) -> None:
        self._insns: list[_Insn] = []
        self._labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._insns)

    def label(self, name: str) -> None:
        if name in self._labels:
            raise BpfError(f"label {name} defined twice")
        self._labels[name] = len(self._insns)

    def mov64_reg(self, dst: int, src: int) -> None:
        """dst = src (64 bit)."""
        self._insns.append(_Insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src))

    def mov32_reg(self, dst: int, src: int) -> None:
        """wdst = wsrc."""
        self._insns.append(_Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src))

    def mov32_imm(self, dst: int, imm: int) -> None:
        """wdst = imm."""
        self._insns.append(_Insn(BPF_ALU | BPF_MOV | BPF_K, dst, imm=_s32(imm)))

    def and32_imm(self, dst: int, imm: int) -> None:
        """wdst &= imm."""
        self._insns.append(_Insn(BPF_ALU | BPF_AND | BPF_K, dst, imm=_s32(imm)))

    def lsh32_imm(self, dst: int, imm: int) -> None:
        """wdst <<= imm."""
        self._insns.append(_Insn(BPF_ALU | BPF_LSH | BPF_K, dst, imm=_s32(imm)))

    def ld_abs(self, size: str, offset: int) -> None:
        """r0 = packet[offset] (W/H/B, network byte order converted); needs r6 = skb."""
        self._insns.append(_Insn(BPF_LD | _SIZES[size] | BPF_ABS, imm=offset))

    def ld_ind(self, size: str, src: int, offset: int) -> None:
        """r0 = packet[src + offset]; needs r6 = skb."""
        self._insns.append(_Insn(BPF_LD | _SIZES[size] | BPF_IND, src=src, imm=offset))

    def jmp32_imm(self, op: str, dst: int, imm: int, target: str) -> None:
        """if (wdst op imm) goto target."""
        self._insns.append(_Insn(BPF_JMP32 | _JUMPS[op] | BPF_K, dst, imm=_s32(imm),
                                 label=target))

    def ja(self, target: str) -> None:
        """goto target."""
        self._insns.append(_Insn(BPF_JMP | BPF_JA, label=target))

    def exit(self) -> None:
        self._insns.append(_Insn(BPF_JMP | BPF_EXIT))

    def assemble(self) -> bytes:
        """The program as bytes, jump labels resolved."""
        out = bytearray()
        for pos, insn in enumerate(self._insns):
            off = insn.off
            if insn.label is not None:
                if insn.label not in self._labels:
                    raise BpfError(f"undefined label {insn.label}")
                off = self._labels[insn.label] - (pos + 1)
                if not -0x8000 <= off <= 0x7FFF:
                    raise BpfError("jump too far")
            out += struct.pack("<BBhi", insn.code, (insn.src << 4) | insn.dst, off, insn.imm)
        return bytes(out)


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class _ProgLoadAttr(ctypes.Structure):
    """The BPF_PROG_LOAD part of ``union bpf_attr`` (up to prog_name)."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


def load_sched_cls(program: bytes, name: str = "xend_antispoof", license: str = "GPL") -> int:
    """Load a tc classifier program with bpf(2); returns the program's file descriptor."""
    machine = platform.machine()
    if machine not in _SYS_BPF:
        raise BpfError(f"don't know the bpf(2) syscall number on {machine}")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    insns = ctypes.create_string_buffer(program, len(program))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(65536)

    def attempt(log_level: int) -> int:
        attr = _ProgLoadAttr()
        attr.prog_type = BPF_PROG_TYPE_SCHED_CLS
        attr.insn_cnt = len(program) // 8
        attr.insns = ctypes.addressof(insns)
        attr.license = ctypes.addressof(lic)
        attr.prog_name = name.encode()[:15]
        if log_level:
            attr.log_level = log_level
            attr.log_size = len(log)
            attr.log_buf = ctypes.addressof(log)
        return libc.syscall(_SYS_BPF[machine], BPF_PROG_LOAD, ctypes.byref(attr),
                            ctypes.sizeof(attr))

    fd = attempt(0)
    if fd < 0:
        err = ctypes.get_errno()
        attempt(1)  # again, for the verifier's explanation
        lines = [x for x in log.value.decode(errors="replace").splitlines() if x.strip()]
        why = f" (verifier: {lines[-1]})" if lines else ""
        raise BpfError(f"bpf(BPF_PROG_LOAD) failed: {os.strerror(err)}{why}")
    return fd


BPF_PROG_TEST_RUN = 10


class _TestRunAttr(ctypes.Structure):
    """The BPF_PROG_TEST_RUN part of ``union bpf_attr``."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
    ]


def prog_test_run(prog_fd: int, frame: bytes) -> int:
    """Run a loaded tc program once on an Ethernet ``frame`` (bpf BPF_PROG_TEST_RUN)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(frame), data_size_out=len(out),
                        data_in=ctypes.addressof(data), data_out=ctypes.addressof(out),
                        repeat=1)
    if libc.syscall(_SYS_BPF[platform.machine()], BPF_PROG_TEST_RUN, ctypes.byref(attr),
                    ctypes.sizeof(attr)) < 0:
        raise BpfError(f"bpf(BPF_PROG_TEST_RUN) failed: {os.strerror(ctypes.get_errno())}")
    return attr.retval
