"""The lab gateway: a FastAPI + SQLAlchemy tool gateway that can hold or release its sessions.

``held`` reproduces the incident (sessions from ``Depends(get_db)`` open for the
whole request, across the downstream call); ``fresh`` is the fix (short
``fresh_db_session()`` blocks, plain dicts, nothing open while awaiting). Both
serve the same endpoints with the same queries and response models, so a
difference between their profiles is the session strategy and nothing else.
"""
