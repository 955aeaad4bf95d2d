//! KRaft-style metadata quorum on openraft for Fjord (issue #3).
