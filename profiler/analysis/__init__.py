"""Pure functions over captured data: no I/O, no clock."""
