mod audit;
mod cli;
mod common;
mod mutate;
mod policy;
mod redaction;
mod wasm;
