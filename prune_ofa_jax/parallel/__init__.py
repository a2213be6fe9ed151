"""Mesh, logical axis rules and shardings (data parallel, FSDP, tensor)."""
