//! placeholder, replaced by the train crate
