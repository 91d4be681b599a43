//! Guest stdout/stderr: a sink that keeps the first N bytes and silently
//! drops the rest, so an output flood is truncated while the guest keeps
//! running (wasmtime's `MemoryOutputPipe` instead fails the guest's write).

use crate::sandbox::pool::Capped;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A capped output buffer shared with the guest's WASI streams. Clones
/// write to the same buffer.
#[derive(Clone, Default)]
pub struct Sink(Arc<Mutex<Capped>>);

impl Sink {
    pub fn new(cap: usize) -> Sink {
        Sink(Arc::new(Mutex::new(Capped::new(cap))))
    }

    /// Sets the cap (a pooled guest learns its limits when its job arrives).
    pub fn set_cap(&self, cap: usize) {
        if let Ok(mut s) = self.0.lock() {
            s.set_cap(cap);
        }
    }

    fn push(&self, data: &[u8]) {
        if let Ok(mut s) = self.0.lock() {
            s.push(data);
        }
    }

    /// Takes what was kept and whether anything was dropped.
    pub fn take(&self) -> (Vec<u8>, bool) {
        match self.0.lock() {
            Ok(mut s) => s.take(),
            Err(_) => (Vec::new(), true),
        }
    }
}

impl IsTerminal for Sink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Sink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for Sink {
    async fn ready(&mut self) {}
}

/// Large enough that the guest never waits; the cap is applied on write.
const PERMIT: usize = 1 << 20;

#[async_trait::async_trait]
impl OutputStream for Sink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

impl tokio::io::AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_flags_the_rest() {
        let mut s = Sink::new(5);
        s.write(Bytes::from_static(b"abc")).unwrap();
        s.write(Bytes::from_static(b"defgh")).unwrap();
        assert_eq!(s.take(), (b"abcde".to_vec(), true));
    }
}
