"""The feature store: Arrow shards plus a manifest (see DESIGN.md, "Store format")."""

from attrib.store.reader import Layout, ShardInfo, Store, column_matrix

__all__ = ["Layout", "ShardInfo", "Store", "column_matrix"]
