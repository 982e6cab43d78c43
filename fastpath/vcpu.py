"""A vCPU executing guest port accesses: ring-0 first, ring-3 when ring-0 defers.

This plays the part of VirtualBox's VT-x exit handler and EM together, in strict mode:

* IN deferred (VINF_IOM_R3_IOPORT_READ): the read is sent to ring-3 as a pending read
  (VINF_EM_PENDING_R3_IOPORT_READ) and its value comes back in the reply;
* OUT parked as a pending write (VINF_IOM_R3_IOPORT_COMMIT_WRITE): ring-3 is asked to
  process VMCPU_FF_IOM, commits the write and replies with the merged status;
* INS/OUTS deferred: ring-3 does the units ring-0 did not;
* an MMIO read deferred (VINF_IOM_R3_MMIO_READ) is redone by ring-3; an MMIO write parked
  as a pending MMIO write (VINF_IOM_R3_MMIO_COMMIT_WRITE) is committed like an OUT.

The status an access ends with is then acted on: VINF_EM_OFF and VINF_EM_TERMINATE stop
the vCPU (the VM powers off); anything else lets it go on.
"""

from __future__ import annotations

from fastpath.dispatch import PortDispatcher
from fastpath.link import Ring3Link
from fastpath.mmio import MmioDispatcher
from shared.status import (
    VERR_INTERNAL_ERROR,
    VINF_EM_OFF,
    VINF_EM_PENDING_R3_IOPORT_READ,
    VINF_EM_TERMINATE,
    VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_IOM_R3_MMIO_COMMIT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    VINF_SUCCESS,
)
from shared.vcpu import VM_RUNNING, VmShared
from shared.wire import OP_COMMIT, OP_IOPORT_READ, OP_IOPORT_READ_STRING, OP_IOPORT_WRITE_STRING, OP_MMIO_READ

STOP_STATUSES = frozenset((VINF_EM_OFF, VINF_EM_TERMINATE))
UNIT_SIZES = (1, 2, 4)  # what a string instruction can move per unit


class VCpuStopped(Exception):
    """The vCPU stops: the guest powered the VM off, or ring-3 asked every vCPU to stop."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class VCpu:
    def __init__(
        self, vcpu_id: int, dispatcher: PortDispatcher, mmio: MmioDispatcher, link: Ring3Link, vm: VmShared
    ) -> None:
        self.id = vcpu_id
        self.ports = dispatcher
        self.mmio = mmio
        self.link = link
        self.vm = vm
        self.failures = 0
        self.power_off_on_device_error = False  # the VM config's OnDeviceError = "poweroff"
        # Units (a REP string instruction moves many) finished in each tier.
        self.units_ring0 = 0
        self.units_ring3 = 0

    def _retire(self, rc: int) -> None:
        """Act on the status an access ended with."""
        if rc in STOP_STATUSES:
            raise VCpuStopped(rc)
        if rc < 0:
            self.failures += 1
            # VERR_INTERNAL_ERROR is what an access gets when a device callback raised.
            if rc == VERR_INTERNAL_ERROR and self.power_off_on_device_error:
                raise VCpuStopped(VINF_EM_OFF)

    def check_vm_state(self) -> None:
        """A VM-wide force flag: ring-3 wants every vCPU to stop (another one powered off)."""
        if self.vm.state != VM_RUNNING:
            raise VCpuStopped(VINF_EM_OFF)

    def port_read(self, port: int, size: int) -> tuple[int, int]:
        """IN: (status, value)."""
        rc, value = self.ports.read(port, size)
        if rc == VINF_IOM_R3_IOPORT_READ:
            rc, value = self.link.call(OP_IOPORT_READ, port, size, VINF_EM_PENDING_R3_IOPORT_READ)
            self.units_ring3 += 1
        else:
            self.units_ring0 += 1
        self._retire(rc)
        return rc, value

    def port_write(self, port: int, value: int, size: int) -> int:
        """OUT: the status after any commit and merge."""
        rc = self.ports.write(port, value, size)
        if rc == VINF_IOM_R3_IOPORT_COMMIT_WRITE:
            rc, _ = self.link.call(OP_COMMIT, rc)
            self.units_ring3 += 1
        else:
            self.units_ring0 += 1
        self._retire(rc)
        return rc

    def port_read_string(self, port: int, size: int, count: int) -> tuple[int, bytes]:
        """REP INS: (status, the bytes read).  Restarted for units left, as a CPU would."""
        if size not in UNIT_SIZES:  # IOM refuses it (and counts it); nothing moves
            rc = self.ports.read_string(port, size, count)[0]
            self.units_ring0 += count
            self._retire(rc)
            return rc, b""
        parts: list[bytes] = []
        while True:
            rc, data, left = self.ports.read_string(port, size, count)
            parts.append(data)
            self.units_ring0 += len(data) // size
            if rc == VINF_IOM_R3_IOPORT_READ:
                rc, data = self.link.call(OP_IOPORT_READ_STRING, port, size, left)
                parts.append(data)
                left -= len(data) // size
                self.units_ring3 += len(data) // size
            self._retire(rc)
            if not left or rc < 0 or left == count:
                return rc, b"".join(parts)
            count = left

    def port_write_string(self, port: int, size: int, data: bytes) -> int:
        """REP OUTS: the status.  Restarted for units left, as a CPU would."""
        if size not in UNIT_SIZES:  # IOM refuses it (and counts it); nothing moves
            rc = self.ports.write_string(port, size, data)[0]
            self.units_ring0 += 1
            self._retire(rc)
            return rc
        while True:
            rc, done = self.ports.write_string(port, size, data)
            self.units_ring0 += done
            if rc == VINF_IOM_R3_IOPORT_WRITE:
                rc, more = self.link.call(OP_IOPORT_WRITE_STRING, port, size, data[done * size :])
                done += more
                self.units_ring3 += more
            self._retire(rc)
            if done * size >= len(data) or rc < 0 or done == 0:
                return rc
            data = data[done * size :]

    def mmio_read(self, address: int, size: int) -> tuple[int, int]:
        """An MMIO read: (status, value)."""
        rc, value = self.mmio.read(address, size)
        if rc == VINF_IOM_R3_MMIO_READ:
            rc, value = self.link.call(OP_MMIO_READ, address, size, rc)
            self.units_ring3 += 1
        else:
            self.units_ring0 += 1
        self._retire(rc)
        return rc, value

    def mmio_write(self, address: int, value: int, size: int) -> int:
        """An MMIO write: the status after any commit and merge."""
        rc = self.mmio.write(address, value, size)
        if rc == VINF_IOM_R3_MMIO_COMMIT_WRITE or (rc != VINF_SUCCESS and self.mmio.vcpu.force_flag_iom):
            rc, _ = self.link.call(OP_COMMIT, rc)  # VMCPU_FF_IOM: bytes are parked, whatever the status
            self.units_ring3 += 1
        else:
            self.units_ring0 += 1
        self._retire(rc)
        return rc
