"""Finding workers: local processes, namespaces, containers."""
