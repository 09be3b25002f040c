"""Maximum-inner-product indexes (FAISS) over a store's training side, for instant top-k."""
