"""Per-VM and per-vCPU state both tiers read: the VM's run state and each vCPU's pending write.

VirtualBox keeps a vCPU's pending I/O port and MMIO writes in IOMCPU (``PendingIOPortWrite``,
``PendingMmioWrite``):
ring-0 fills it when an OUT cannot finish there, sets VMCPU_FF_IOM, and ring-3's
IOMR3ProcessForceFlag performs it and clears it.  Here it sits in shared memory, so the
message that asks ring-3 to commit carries no data of its own: ring-3 reads the same
record ring-0 wrote.
"""

from __future__ import annotations

import ctypes

MAX_VCPUS = 64

VM_RUNNING = 0
VM_POWERING_OFF = 1  # ring-3 asks every vCPU to stop at its next access


class PendingPortWrite(ctypes.Structure):
    """IOMCPU.PendingIOPortWrite: size 0 means nothing is pending."""

    _fields_ = [
        ("port", ctypes.c_uint16),
        ("size", ctypes.c_uint8),
        ("value", ctypes.c_uint32),
    ]


class PendingMmioWrite(ctypes.Structure):
    """IOMCPU.PendingMmioWrite: size 0 means nothing is pending."""

    _fields_ = [
        ("address", ctypes.c_uint64),  # GCPhys of the first byte
        ("size", ctypes.c_uint32),  # cbValue
        ("region_hint", ctypes.c_uint32),  # the MMIO handle it was aimed at, or NO_REGION_HINT
        ("data", ctypes.c_uint8 * 128),  # abValue
    ]


NO_REGION_HINT = 0xFFFFFFFF


class VCpuShared(ctypes.Structure):
    _fields_ = [
        ("pending_port_write", PendingPortWrite),
        ("pending_mmio_write", PendingMmioWrite),
        ("force_flag_iom", ctypes.c_uint8),  # VMCPU_FF_IOM: a pending write waits for ring-3
    ]


class VmShared(ctypes.Structure):
    _fields_ = [
        ("state", ctypes.c_uint32),  # VM_RUNNING / VM_POWERING_OFF
        ("vcpu_count", ctypes.c_uint32),
        ("clock_base_ns", ctypes.c_uint64),  # CLOCK_MONOTONIC at VM creation: virtual time 0
        ("vcpus", VCpuShared * MAX_VCPUS),
    ]
