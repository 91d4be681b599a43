mod cli;
mod common;
mod policy;
mod wasm;
