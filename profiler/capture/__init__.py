"""Wrappers around the external profilers (py-spy, memray) and /proc samplers."""
