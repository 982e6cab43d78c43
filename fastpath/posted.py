"""Posted and doorbell modes (beyond VirtualBox): a deferred write that does not make the vCPU wait.

Posted mode is Xen's buffered ioreqs / KVM's coalesced MMIO: when ring-0 parks a write
for ring-3 and the region lets it, the write is sent one way and the vCPU goes on.
Doorbell mode is KVM's ioeventfd: a write to a registered port or address (optionally of
one value) skips ring-0 entirely and only rings ring-3, which runs the device's handler.

Both keep the guest's view the same as strict mode:

* per device and vCPU, order is kept: before a later access of this vCPU reaches a device
  with writes still in flight, the vCPU waits for ring-3 to finish them (a sync point);
  ring-3 handles one vCPU's messages in the order sent, so a later deferred access needs
  no wait of its own;
* statuses of posted commits come back merged into the reply of the next synchronous
  request, and the vCPU acts on them there;
* at most ``window`` writes are in flight; one more is done strictly instead.
"""

from __future__ import annotations

from typing import Any

from fastpath.dispatch import PortDispatcher
from fastpath.link import Ring3Link
from fastpath.mmio import MmioDispatcher
from fastpath.vcpu import VCpu
from shared.boot import Doorbell
from shared.iomtable import CB_OUT, IomTable
from shared.stats import (
    G_DOORBELLS,
    G_IOPORT_OUT,
    G_MMIO_WRITES,
    G_POSTED,
    G_POSTED_WINDOW_FULL,
    G_SYNCS,
)
from shared.status import (
    VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    VINF_IOM_R3_MMIO_COMMIT_WRITE,
    VINF_SUCCESS,
)
from shared.vcpu import NO_REGION_HINT, VmShared
from shared.wire import OP_COMMIT, OP_DOORBELL, OP_POST, OP_POST_MMIO, OP_SYNC

UNKNOWN_OWNER = -1  # the lookup could not say (IOM lock busy): treat as "maybe in flight"


class SyncingLink:
    """The vCPU's link: every synchronous request is a sync point for posted writes."""

    def __init__(self, link: Ring3Link, vcpu: PostingVCpu) -> None:
        self.link = link
        self.vcpu = vcpu

    @property
    def messages(self) -> int:
        return self.link.messages

    @property
    def seq(self) -> int:
        return self.link.seq

    def call(self, op: int, *args: Any) -> tuple[int, Any]:
        result = self.link.call(op, *args)
        self.vcpu.in_flight_owners.clear()  # ring-3 answered after everything sent before
        self.vcpu.in_flight = 0
        return result

    def send(self, op: int, *args: Any) -> None:
        self.link.send(op, *args)


class PostingVCpu(VCpu):
    def __init__(
        self,
        vcpu_id: int,
        dispatcher: PortDispatcher,
        mmio: MmioDispatcher,
        link: Ring3Link,
        vm: VmShared,
        table: IomTable,
        *,
        posted: bool,
        window: int,
        doorbells: tuple[Doorbell, ...],
    ) -> None:
        super().__init__(vcpu_id, dispatcher, mmio, SyncingLink(link, self), vm)  # type: ignore[arg-type]
        self.posted = posted
        self.window = window
        self.in_flight = 0
        self.in_flight_owners: set[int] = set()
        # Registrations are frozen before workers start: owners and postability never change.
        self.port_owner = [table.entries[h].owner for h in range(table.registrations)]
        # Writes to a region without a ring-0 write callback never touch the device in ring-0:
        # they need no sync first, so a stream of them pipelines.
        self.port_ring3_writes = [not table.entries[h].ring0_callbacks & CB_OUT for h in range(table.registrations)]
        self.mmio_ring3_writes = [
            not table.mmio_entries[h].ring0_callbacks & CB_OUT for h in range(table.mmio_registrations)
        ]
        self.port_postable = [bool(table.entries[h].postable) for h in range(table.registrations)]
        self.mmio_owner = [table.mmio_entries[h].owner for h in range(table.mmio_registrations)]
        self.mmio_postable = [bool(table.mmio_entries[h].postable) for h in range(table.mmio_registrations)]
        self.port_bells = {bell.address: bell.value for bell in doorbells if not bell.mmio}
        self.mmio_bells = {bell.address: bell.value for bell in doorbells if bell.mmio}
        self.counters = dispatcher.counters
        self.row = dispatcher.row

    # -- where an access goes -----------------------------------------------------------
    def _port_region(self, port: int) -> int | None:
        """The handle of the region holding *port*, None for no region, UNKNOWN_OWNER if busy."""
        lookup = self.ports.lookup
        if not lookup.refresh():
            return UNKNOWN_OWNER
        i = lookup.find(port, 0)
        return lookup.infos[i].handle if i >= 0 else None

    def _mmio_region(self, address: int) -> int | None:
        lookup = self.mmio.lookup
        if not lookup.refresh():
            return UNKNOWN_OWNER
        i = lookup.find(address, 0)
        return lookup.infos[i].handle if i >= 0 else None

    def _sync_before(self, owner: int | None) -> None:
        """Order per device: writes in flight to this device finish before the access reaches it.

        *owner* None is "no device" (nothing to wait for); UNKNOWN_OWNER waits to be safe.
        """
        if owner is not None and (owner == UNKNOWN_OWNER or owner in self.in_flight_owners):
            self.counters[self.row + G_SYNCS] += 1
            rc, _ = self.link.call(OP_SYNC)
            self._retire(rc)

    def _port_owner(self, port: int) -> int | None:
        handle = self._port_region(port)
        return handle if handle is None or handle == UNKNOWN_OWNER else self.port_owner[handle]

    def _mmio_owner(self, address: int) -> int | None:
        handle = self._mmio_region(address)
        return handle if handle is None or handle == UNKNOWN_OWNER else self.mmio_owner[handle]

    def _flying(self, owner: int) -> None:
        self.in_flight += 1
        self.in_flight_owners.add(owner)
        self.units_ring3 += 1

    # -- the accesses -------------------------------------------------------------------
    def port_read(self, port: int, size: int) -> tuple[int, int]:
        if self.in_flight:
            self._sync_before(self._port_owner(port))
        return super().port_read(port, size)

    def port_read_string(self, port: int, size: int, count: int) -> tuple[int, bytes]:
        if self.in_flight:
            self._sync_before(self._port_owner(port))
        return super().port_read_string(port, size, count)

    def port_write_string(self, port: int, size: int, data: bytes) -> int:
        if self.in_flight:
            self._sync_before(self._port_owner(port))
        return super().port_write_string(port, size, data)

    def mmio_read(self, address: int, size: int) -> tuple[int, int]:
        if self.in_flight:
            self._sync_before(self._mmio_owner(address))
        return super().mmio_read(address, size)

    def port_write(self, port: int, value: int, size: int) -> int:
        if port in self.port_bells and self.port_bells[port] in (None, value):
            owner = self._port_owner(port)
            self.counters[self.row + G_IOPORT_OUT] += 1
            self.counters[self.row + G_DOORBELLS] += 1
            self.link.send(OP_DOORBELL, 0, port, size, value)
            self._flying(UNKNOWN_OWNER if owner is None else owner)
            return VINF_SUCCESS
        if self.in_flight:
            handle = self._port_region(port)
            if handle is None or handle == UNKNOWN_OWNER:
                self._sync_before(handle)
            elif not self.port_ring3_writes[handle]:
                self._sync_before(self.port_owner[handle])
        if not self.posted:
            return super().port_write(port, value, size)
        rc = self.ports.write(port, value, size)
        if rc != VINF_IOM_R3_IOPORT_COMMIT_WRITE:
            self.units_ring0 += 1
            self._retire(rc)
            return rc
        handle = self._port_region(port)
        if handle is None or handle == UNKNOWN_OWNER or not self.port_postable[handle]:
            rc, _ = self.link.call(OP_COMMIT, rc)
        elif self.in_flight >= self.window:
            self.counters[self.row + G_POSTED_WINDOW_FULL] += 1
            rc, _ = self.link.call(OP_COMMIT, rc)
        else:
            shared = self.ports.vcpu
            pending = shared.pending_port_write
            self.link.send(OP_POST, pending.port, pending.size, pending.value)
            pending.size = 0  # in flight now: ring-3 commits it from the message
            shared.force_flag_iom = 0
            self.counters[self.row + G_POSTED] += 1
            self._flying(self.port_owner[handle])
            return VINF_SUCCESS
        self.units_ring3 += 1
        self._retire(rc)
        return rc

    def mmio_write(self, address: int, value: int, size: int) -> int:
        if address in self.mmio_bells and self.mmio_bells[address] in (None, value):
            owner = self._mmio_owner(address)
            self.counters[self.row + G_MMIO_WRITES] += 1
            self.counters[self.row + G_DOORBELLS] += 1
            self.link.send(OP_DOORBELL, 1, address, size, value)
            self._flying(UNKNOWN_OWNER if owner is None else owner)
            return VINF_SUCCESS
        if self.in_flight:
            handle = self._mmio_region(address)
            if handle is None or handle == UNKNOWN_OWNER:
                self._sync_before(handle)
            elif not self.mmio_ring3_writes[handle]:
                self._sync_before(self.mmio_owner[handle])
        if not self.posted:
            return super().mmio_write(address, value, size)
        rc = self.mmio.write(address, value, size)
        shared = self.mmio.vcpu
        pending = shared.pending_mmio_write
        if rc != VINF_IOM_R3_MMIO_COMMIT_WRITE:
            if rc != VINF_SUCCESS and shared.force_flag_iom:
                rc, _ = self.link.call(OP_COMMIT, rc)  # an EM status with bytes parked: strict
                self.units_ring3 += 1
            else:
                self.units_ring0 += 1
            self._retire(rc)
            return rc
        hint = pending.region_hint
        if hint == NO_REGION_HINT or hint >= len(self.mmio_postable) or not self.mmio_postable[hint]:
            rc, _ = self.link.call(OP_COMMIT, rc)
        elif self.in_flight >= self.window:
            self.counters[self.row + G_POSTED_WINDOW_FULL] += 1
            rc, _ = self.link.call(OP_COMMIT, rc)
        else:
            self.link.send(OP_POST_MMIO, pending.address, hint, bytes(pending.data[: pending.size]))
            pending.size = 0
            shared.force_flag_iom = 0
            self.counters[self.row + G_POSTED] += 1
            self._flying(self.mmio_owner[hint])
            return VINF_SUCCESS
        self.units_ring3 += 1
        self._retire(rc)
        return rc
