//! Parts of the `toolgate` binary that are not its entry point: the flag
//! definitions and the `bench` figures. The library knows nothing of them.

pub mod admin;
pub mod args;
pub mod bench;
pub mod output;
