//! Block cache (memory LRU + optional disk spill) and metadata cache.
