"""Model families, tiny model construction and loading (hub ids or local directories)."""
