mod audit;
mod cli;
mod common;
mod gate;
mod mutate;
mod policy;
mod redaction;
mod wasm;
