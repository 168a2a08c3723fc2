//! Why a delivery failed, as every destination says it: the worker retries
//! what may pass and dead-letters what will not.

#[derive(Debug)]
pub enum Failure {
    /// Trying again may work (the destination's state: down, slow, full).
    Transient(String),
    /// Trying again will not (the destination refused the content).
    Permanent(String),
}
