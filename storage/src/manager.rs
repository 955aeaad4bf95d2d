//! The log manager.
pub struct LogManager;
pub struct ManagerConfig;
