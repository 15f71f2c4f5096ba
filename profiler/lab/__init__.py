"""The lab: a gateway that reproduces connection holding, its database, and load.

Needs the ``lab`` extra (``pip install 'profiler-workbench[lab]'``).
"""
