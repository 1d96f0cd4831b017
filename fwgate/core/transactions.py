"""Counting foreign transactions on the watched scope. Pure.

A transaction's events end with its NEWGEN, but a read may stop before it: the
transaction counts (restarts the quiet window) when its first events are read, never
earlier and never twice."""
from __future__ import annotations


class TransactionCounter:
    def __init__(self) -> None:
        self.touched = False   # the open transaction changed the watched scope
        self.counted = False   # ... and was counted already

    def touch(self) -> None:
        self.touched = True

    def closed(self) -> bool:
        """Its NEWGEN: True when it touched the scope and was not counted yet."""
        count = self.touched and not self.counted
        self.touched = self.counted = False
        return count

    def read_ends(self) -> bool:
        """The batch of events read ends with its NEWGEN still on the way: True when it
        should be counted now."""
        if self.touched and not self.counted:
            self.counted = True
            return True
        return False

    def forget(self) -> None:
        """Events were lost: the open transaction is beyond knowing."""
        self.touched = self.counted = False
