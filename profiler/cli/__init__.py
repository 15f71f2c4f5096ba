"""The command line: one module per verb or verb group, registered in ``main``."""
