"""The feature store: Arrow shards plus a manifest (see DESIGN.md, "Store format")."""

from .reader import ShardInfo, Store, column_matrix

__all__ = ["ShardInfo", "Store", "column_matrix"]
