"""What both tiers see: status codes, shared-memory layouts, locks and the wire protocol.

Nothing here imports ``fastpath`` or ``slowpath``.
"""
