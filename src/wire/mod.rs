//! Wire formats: how engine types look on the network. The HTTP handlers
//! convert here and nowhere else.

pub mod json;
pub mod proto;
pub mod s2s;
