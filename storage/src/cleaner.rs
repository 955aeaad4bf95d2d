//! Key-based log compaction (the log cleaner).
