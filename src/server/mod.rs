//! The local exec service (HTTP, [`http`]) and the MCP server ([`mcp`]).
//!
//! Both are thin transports over one [`crate::Executor`]: the executor owns
//! policy, confirmation, sandboxes, rate limits, budgets and audit; the
//! transports own authentication, request limits and the wire format.

pub mod auth;
pub mod http;
pub mod mcp;
pub mod openapi;
pub mod request;
