"""A vCPU worker's connection to ring-3: a ZeroMQ DEALER sending one request per deferral.

Every wait for a reply has a deadline that is checked every 200 ms: if ring-3 is gone
(the worker has been re-parented) the worker stops with a clear error instead of
hanging.  A reply that breaks the protocol is an error too, never silently used.
"""

from __future__ import annotations

import os
from typing import Any

import zmq

from shared.status import status_name
from shared.wire import (
    MAX_MESSAGE_BYTES,
    OP_ERROR,
    OP_NAMES,
    WireError,
    decode_reply,
    encode_request,
)

POLL_MS = 200


class Ring3Gone(Exception):
    """Ring-3 died or stopped answering."""


class Ring3Refused(Exception):
    """Ring-3 answered a request with an error reply."""


class Ring3Link:
    def __init__(self, endpoint: str, vcpu: int, ring3_pid: int) -> None:
        self.vcpu = vcpu
        self.ring3_pid = ring3_pid
        self.seq = 0
        self.messages = 0
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self._socket.setsockopt(zmq.RCVTIMEO, POLL_MS)
        self._socket.connect(endpoint)

    def call(self, op: int, *args: Any) -> tuple[int, Any]:
        """Send one request and wait for its reply: (status, payload)."""
        self.seq += 1
        self.messages += 1
        socket = self._socket
        socket.send(encode_request(op, self.seq, self.vcpu, *args))
        while True:
            try:
                frame = socket.recv()  # RCVTIMEO bounds the wait
                break
            except zmq.Again:
                if os.getppid() != self.ring3_pid:
                    raise Ring3Gone(
                        f"ring-3 (pid {self.ring3_pid}) is gone while vCPU {self.vcpu} waited for a reply"
                    ) from None
        try:
            reply = decode_reply(frame)
        except WireError as exc:
            raise WireError(f"malformed reply from ring-3 to {OP_NAMES[op]}: {exc}") from None
        if reply.seq != self.seq:
            raise WireError(f"ring-3 answered request {reply.seq}, but vCPU {self.vcpu} waits for {self.seq}")
        if reply.op == OP_ERROR:
            raise Ring3Refused(f"ring-3 refused {OP_NAMES[op]}: {status_name(reply.status)}: {reply.payload}")
        return reply.status, reply.payload

    def send(self, op: int, *args: Any) -> None:
        """A one-way message (posted write, doorbell): no reply; ring-3 handles it in order."""
        self.seq += 1
        self.messages += 1
        self._socket.send(encode_request(op, self.seq, self.vcpu, *args))

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()
