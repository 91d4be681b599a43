//! The egress proxy: the only way out of a sandbox under
//! `network = "allowlist"` or `"open"`. The sandbox's network namespace
//! has only `lo`, where this proxy listens; it dials from toolgate's own
//! network.
//!
//! It speaks HTTP `CONNECT` (for TLS) and plain-HTTP forwarding, which is
//! what pip, npm, cargo, git and curl use when the proxy variables are set.
//! Every connection is decided here, and every decision is an [`Event`]:
//!
//! - under `allowlist` ([`Scope::Only`]) the target must match an
//!   [`Allowlist`] entry: `host` (ports 80 and 443), `*.host` (subdomains
//!   only), `host:port`, or an address literal; under `open`
//!   ([`Scope::Public`]) any host and port may be asked for;
//! - the proxy resolves the name itself and dials the address it resolved
//!   — never one the client supplied;
//! - a resolved address that is loopback, private, link-local (the cloud
//!   metadata address among them), CGNAT, unique-local, multicast,
//!   unspecified, or an IPv4-mapped/-compatible IPv6 form of those, is
//!   refused unless an entry names that address itself — in both scopes,
//!   so neither the host, nor another sandbox, nor the metadata service is
//!   reached by a sandbox whose policy does not name them;
//! - under `allowlist` a tunnel must carry TLS whose ClientHello names the
//!   `CONNECT` host (SNI): anything else — no TLS, no SNI, another name —
//!   is refused, so an allowed name cannot front for another (under
//!   `open` every public name is allowed, so a tunnel may carry anything);
//! - a plain request must be in absolute form and its `Host` header must
//!   name the same host and port;
//! - connections and bytes (both ways) are capped per proxy, that is per
//!   call.
//!
//! The proxy never resolves for the sandbox (it has no resolver and no
//! UDP), so DNS carries nothing out; that part belongs to the backends.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::plan::NetworkMode;

/// Where the proxy listens inside a sandbox's network namespace.
pub const LISTEN: &str = "127.0.0.1:3128";

/// The variables that point a sandbox's tools (curl, pip, git, cargo, npm)
/// at the proxy.
pub fn proxy_env() -> Vec<(String, String)> {
    let url = format!("http://{LISTEN}");
    PROXY_VARS
        .iter()
        .map(|k| (k.to_string(), url.clone()))
        .collect()
}

const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "npm_config_proxy",
    "npm_config_https_proxy",
];

/// A variable the sandbox must not bring from elsewhere under a proxy
/// (another proxy, or a `NO_PROXY` that sends traffic around it).
pub fn replaced_by_proxy_env(name: &str) -> bool {
    PROXY_VARS.contains(&name) || name.eq_ignore_ascii_case("no_proxy")
}

/// A listener on [`LISTEN`] in the network namespace of process `pid`. A
/// socket belongs to the namespace it was made in, so one thread joins
/// that namespace (`setns`: root, or the namespace's owner with
/// `CAP_SYS_ADMIN`), makes it and ends; the socket then serves from any.
#[allow(unsafe_code)]
pub fn listen_in(pid: u32) -> std::io::Result<tokio::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let l = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace file opened above; it changes
            // only this thread, which ends right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpListener::bind(LISTEN)
        })
        .join()
        .map_err(|_| std::io::Error::other("the listener thread panicked"))?
    })?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

/// What a proxy lets through: only listed hosts, or any public one. In
/// both, the list names the special addresses that may be reached.
#[derive(Debug, Clone)]
pub enum Scope {
    Only(Allowlist),
    Public(Allowlist),
}

impl Scope {
    /// The scope of a network mode; `None` when the mode has no way out.
    pub fn of(mode: &NetworkMode) -> Result<Option<Scope>, EgressError> {
        Ok(match mode {
            NetworkMode::None => None,
            NetworkMode::Allowlist(h) => Some(Scope::Only(Allowlist::parse(h)?)),
            NetworkMode::Open(h) => Some(Scope::Public(Allowlist::parse(h)?)),
        })
    }

    fn list(&self) -> &Allowlist {
        match self {
            Scope::Only(l) | Scope::Public(l) => l,
        }
    }
}

/// The call's proxy serving the sandbox of process `pid` (see
/// [`listen_in`]) under `mode`, until the returned guard is dropped; `None`
/// when the mode has no way out.
pub fn serve_in(
    pid: u32,
    mode: &NetworkMode,
    backend: &'static str,
) -> Result<Option<Serving>, super::SandboxError> {
    let Some(scope) =
        Scope::of(mode).map_err(|e| super::SandboxError::Unsupported(e.to_string()))?
    else {
        return Ok(None);
    };
    let l = listen_in(pid).map_err(|e| super::SandboxError::Unavailable {
        backend,
        detail: format!(
            "the egress proxy cannot listen in the sandbox's network namespace (this needs toolgate to run as root): {e}"
        ),
    })?;
    let proxy = Proxy::new(
        scope,
        Arc::new(SystemResolver),
        Arc::new(SystemDialer),
        Caps::default(),
    );
    Ok(Some(Serving {
        task: tokio::spawn(proxy.clone().serve(l)),
        proxy,
    }))
}

/// A proxy serving one sandbox; dropping it closes the listener and every
/// connection it opened.
pub struct Serving {
    proxy: Arc<Proxy>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Stops serving; the decisions it made.
    pub fn finish(self) -> Vec<Event> {
        self.proxy.events()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Longest request head or ClientHello read before deciding.
const MAX_HEAD: usize = 16 << 10;
/// How long a client may take to send what the decision needs.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::hosts::HostList as Allowlist;
pub use crate::hosts::HostsError as EgressError;
use crate::hosts::{Miss, canonical, split_host_port, unmap, valid_name};

impl From<Miss> for Refusal {
    fn from(m: Miss) -> Refusal {
        match m {
            Miss::Host => Refusal::HostNotListed,
            Miss::Address => Refusal::AddressNotListed,
            Miss::Port => Refusal::PortNotListed,
        }
    }
}

/// Why an address is not a public one, if it is not.
pub fn special(a: IpAddr) -> Option<&'static str> {
    match unmap(a) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (::a.b.c.d, deprecated): judge the IPv4 inside.
                special_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
                .or(Some("IPv4-compatible"))
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 (64:ff9b::/96) reaches the IPv4 address inside.
                special_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
            } else if s[0] == 0x2002 {
                // 6to4 carries an IPv4 address too.
                special_v4(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ))
            } else {
                None
            }
        }
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        // 169.254.169.254 is the cloud metadata service.
        Some("link-local")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("CGNAT")
    } else if a.is_multicast() || a.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else if o[0] == 198 && (o[1] == 18 || o[1] == 19) {
        Some("benchmarking")
    } else {
        None
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    HostNotListed,
    AddressNotListed,
    PortNotListed,
    /// The name resolved only to addresses of this kind.
    Special {
        addr: IpAddr,
        kind: &'static str,
    },
    Unresolved(String),
    NotTls,
    NoSni,
    SniMismatch(String),
    HostHeaderMismatch(String),
    BadRequest(&'static str),
    ConnectionCap,
    ByteCap,
    Upstream(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::HostNotListed => write!(f, "the host is not on the allowlist"),
            Refusal::AddressNotListed => {
                write!(f, "a raw address is not on the allowlist (name the host)")
            }
            Refusal::PortNotListed => write!(f, "the port is not on the allowlist for this host"),
            Refusal::Special { addr, kind } => write!(
                f,
                "the host resolves to a {kind} address ({addr}), which only an entry naming that address allows"
            ),
            Refusal::Unresolved(e) => write!(f, "the host does not resolve: {e}"),
            Refusal::NotTls => write!(f, "a tunnel must carry TLS"),
            Refusal::NoSni => write!(f, "the TLS ClientHello names no server (SNI)"),
            Refusal::SniMismatch(s) => {
                write!(f, "the TLS ClientHello names {s:?}, not the CONNECT host")
            }
            Refusal::HostHeaderMismatch(h) => {
                write!(f, "the Host header {h:?} is not the request's target")
            }
            Refusal::BadRequest(w) => write!(f, "not a proxy request: {w}"),
            Refusal::ConnectionCap => write!(f, "the call's connection cap is reached"),
            Refusal::ByteCap => write!(f, "the call's byte cap is reached"),
            Refusal::Upstream(e) => write!(f, "the host could not be reached: {e}"),
        }
    }
}

/// One decision, for the Outcome and the audit.
pub use crate::outcome::Egress as Event;

/// Resolves names for the proxy (tests give their own).
#[async_trait::async_trait]
pub trait Resolve: Send + Sync {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The host's resolver.
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// Opens the proxy's connections to hosts (tests give their own).
#[async_trait::async_trait]
pub trait Dial: Send + Sync {
    async fn dial(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream>;
}

/// The host's network.
pub struct SystemDialer;

#[async_trait::async_trait]
impl Dial for SystemDialer {
    async fn dial(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::connect(addr).await
    }
}

/// Per-call bounds.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub connections: u64,
    /// Bytes both ways, over all connections.
    pub bytes: u64,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            connections: 256,
            bytes: 1 << 30,
        }
    }
}

/// One call's proxy: its scope, caps and the decisions made.
pub struct Proxy {
    scope: Scope,
    resolver: Arc<dyn Resolve>,
    dialer: Arc<dyn Dial>,
    caps: Caps,
    connections: AtomicU64,
    bytes: AtomicU64,
    events: Mutex<Vec<Event>>,
}

impl Proxy {
    pub fn new(
        scope: Scope,
        resolver: Arc<dyn Resolve>,
        dialer: Arc<dyn Dial>,
        caps: Caps,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            scope,
            resolver,
            dialer,
            caps,
            connections: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
        })
    }

    /// The decisions so far, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn record(&self, kind: &'static str, host: &str, port: u16, r: &Result<SocketAddr, Refusal>) {
        let e = Event {
            kind,
            // Checked to be a name or an address when the request was read.
            host: host.to_string(),
            port,
            addr: r.as_ref().ok().map(|a| a.to_string()),
            allowed: r.is_ok(),
            reason: r.as_ref().err().map(|r| r.to_string()),
        };
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }

    /// Serves clients from `listener` until it fails or this future is
    /// dropped (or its task aborted), which ends every connection it opened.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                a = listener.accept() => match a {
                    Ok((s, _)) => {
                        let p = self.clone();
                        conns.spawn(async move { p.handle(s).await });
                    }
                    Err(_) => break,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }

    /// One client connection: one tunnel or one forwarded request.
    pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(&self, mut client: S) {
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
            Ok(Ok(h)) => h,
            _ => {
                let _ = client
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
        };
        let req = match Request::parse(&head.head) {
            Ok(r) => r,
            Err(w) => {
                self.record("http", "", 0, &Err(Refusal::BadRequest(w)));
                let _ = client
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
        };
        let kind = if req.connect { "connect" } else { "http" };
        let addr = match self.decide(&req).await {
            Ok(a) => a,
            Err(r) => {
                self.record(kind, &req.host, req.port, &Err(r.clone()));
                refuse(&mut client, &r).await;
                return;
            }
        };
        // A tunnel opens before anything is dialled; its first bytes are
        // kept to be sent on.
        let mut hello = Vec::new();
        if req.connect {
            let _ = client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await;
            hello = head.rest.clone();
        }
        // Under an allowlist, those bytes must be TLS whose ClientHello
        // names the CONNECT host (under open every public name is allowed:
        // nothing to front for).
        if req.connect && matches!(self.scope, Scope::Only(_)) {
            let sni =
                tokio::time::timeout(HEAD_TIMEOUT, client_hello_sni(&mut client, &mut hello)).await;
            let checked = match sni {
                Ok(Ok(Some(name))) if canonical(&name) == canonical(&req.host) => Ok(addr),
                Ok(Ok(Some(name))) => {
                    Err(Refusal::SniMismatch(crate::call::truncate_for_msg(&name)))
                }
                Ok(Ok(None)) => Err(Refusal::NoSni),
                Ok(Err(r)) => Err(r),
                Err(_) => Err(Refusal::NotTls),
            };
            if let Err(r) = checked {
                self.record(kind, &req.host, req.port, &Err(r));
                let _ = client.shutdown().await;
                return;
            }
        }
        let dialled = match tokio::time::timeout(CONNECT_TIMEOUT, self.dialer.dial(addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Refusal::Upstream(e.to_string())),
            Err(_) => Err(Refusal::Upstream("timed out".into())),
        };
        let mut up = match dialled {
            Ok(s) => s,
            Err(r) => {
                self.record(kind, &req.host, req.port, &Err(r.clone()));
                if !req.connect {
                    refuse(&mut client, &r).await;
                }
                return;
            }
        };
        self.record(kind, &req.host, req.port, &Ok(addr));
        if req.connect {
            if !self.count(hello.len() as u64) || up.write_all(&hello).await.is_err() {
                return;
            }
            self.pipe(client, up).await;
        } else {
            let out = req.origin_form_head();
            if !self.count(out.len() as u64) || up.write_all(&out).await.is_err() {
                return;
            }
            self.forward_body(client, up, &head.rest, req.body_len)
                .await;
        }
    }

    /// Allowed, listed, resolved, public (or named): the address to dial.
    async fn decide(&self, req: &Request) -> Result<SocketAddr, Refusal> {
        if self.connections.fetch_add(1, Ordering::SeqCst) >= self.caps.connections {
            return Err(Refusal::ConnectionCap);
        }
        if self.bytes.load(Ordering::SeqCst) >= self.caps.bytes {
            return Err(Refusal::ByteCap);
        }
        if let Scope::Only(list) = &self.scope {
            list.permits(&req.host, req.port)?;
        }
        if let Some(h) = &req.host_header {
            let (hh, hp) = split_host_port(h).ok_or(Refusal::HostHeaderMismatch(h.clone()))?;
            let default = if req.connect { 443 } else { 80 };
            if canonical(hh) != canonical(&req.host) || hp.unwrap_or(default) != req.port {
                return Err(Refusal::HostHeaderMismatch(crate::call::truncate_for_msg(
                    h,
                )));
            }
        } else if !req.connect {
            return Err(Refusal::BadRequest("no Host header"));
        }
        let bare = req.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
            Ok(a) => vec![a],
            Err(_) => self
                .resolver
                .resolve(bare)
                .await
                .map_err(|e| Refusal::Unresolved(e.to_string()))?,
        };
        let mut refused = None;
        for a in addrs {
            match special(a) {
                Some(kind) if !self.scope.list().names_address(a) => {
                    refused.get_or_insert(Refusal::Special { addr: a, kind });
                }
                _ => return Ok(SocketAddr::new(unmap(a), req.port)),
            }
        }
        Err(refused.unwrap_or_else(|| Refusal::Unresolved("no address".into())))
    }

    fn count(&self, n: u64) -> bool {
        self.bytes.fetch_add(n, Ordering::SeqCst) + n <= self.caps.bytes
    }

    /// Copies `from` to `to` until `from` ends, `limit` bytes went by or
    /// the byte cap is reached; every byte counts against the cap.
    async fn copy<R, W>(&self, from: &mut R, to: &mut W, limit: Option<u64>) -> bool
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut left = limit.unwrap_or(u64::MAX);
        let mut buf = vec![0u8; 16 << 10];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match from.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return limit.is_none(),
                Ok(n) => n,
            };
            if !self.count(n as u64) || to.write_all(&buf[..n]).await.is_err() {
                return false;
            }
            left -= n as u64;
        }
        true
    }

    /// Copies both ways until either side closes or the byte cap is reached.
    async fn pipe<C: AsyncRead + AsyncWrite + Unpin>(&self, client: C, up: tokio::net::TcpStream) {
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut ur, mut uw) = up.into_split();
        let one = async {
            self.copy(&mut cr, &mut uw, None).await;
            let _ = uw.shutdown().await;
        };
        let other = async {
            self.copy(&mut ur, &mut cw, None).await;
            let _ = cw.shutdown().await;
        };
        tokio::join!(one, other);
    }

    /// A forwarded request's body (exactly `len` bytes, `rest` first), then
    /// the response until the host closes: nothing else the client sends
    /// reaches the host (a second request could name another).
    async fn forward_body<C: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut client: C,
        mut up: tokio::net::TcpStream,
        rest: &[u8],
        len: u64,
    ) {
        let first = &rest[..rest.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
        if !self.count(first.len() as u64) || up.write_all(first).await.is_err() {
            return;
        }
        let left = len - first.len() as u64;
        if self.copy(&mut client, &mut up, Some(left)).await {
            self.copy(&mut up, &mut client, None).await;
        }
        let _ = client.shutdown().await;
    }
}

async fn refuse<S: AsyncWrite + Unpin>(client: &mut S, r: &Refusal) {
    let body = format!("toolgate egress: refused: {r}\n");
    let msg = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(msg.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// A request head and what came after it in the same reads.
struct Head {
    head: Vec<u8>,
    rest: Vec<u8>,
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Head { head: buf, rest });
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too long"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A parsed proxy request.
#[derive(Debug)]
struct Request {
    connect: bool,
    method: String,
    host: String,
    port: u16,
    /// Path and query, for a plain request.
    path: String,
    version: String,
    host_header: Option<String>,
    /// Other header lines, as sent (hop-by-hop proxy headers dropped).
    headers: Vec<String>,
    /// `Content-Length` of a plain request's body.
    body_len: u64,
}

impl Request {
    fn parse(head: &[u8]) -> Result<Request, &'static str> {
        let text = std::str::from_utf8(head).map_err(|_| "not text")?;
        let mut lines = text.split("\r\n");
        let first = lines.next().ok_or("empty")?;
        let mut parts = first.split(' ');
        let (method, target, version) = (
            parts.next().ok_or("no method")?,
            parts.next().ok_or("no target")?,
            parts.next().ok_or("no version")?,
        );
        if parts.next().is_some() || !version.starts_with("HTTP/1.") {
            return Err("not HTTP/1.x");
        }
        let mut host_header = None;
        let mut headers = Vec::new();
        let mut body_len = None;
        for l in lines.filter(|l| !l.is_empty()) {
            // A lone CR or LF, or a folded line, would let the host read a
            // header (another Host) this parser did not see.
            if l.contains(['\r', '\n']) || l.starts_with([' ', '\t']) {
                return Err("a bare CR or LF, or a folded header line");
            }
            let (k, v) = l.split_once(':').ok_or("a header without a colon")?;
            if k.is_empty() || k.contains(|c: char| c.is_ascii_whitespace()) {
                return Err("a malformed header name");
            }
            let k_l = k.trim().to_ascii_lowercase();
            if k_l == "host" {
                if host_header.is_some() {
                    return Err("two Host headers");
                }
                host_header = Some(v.trim().to_string());
            } else if k_l == "transfer-encoding" {
                return Err("chunked request bodies are not forwarded");
            } else if !k_l.starts_with("proxy-") && k_l != "connection" && k_l != "keep-alive" {
                if k_l == "content-length" {
                    let n = v
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| "a bad Content-Length")?;
                    if body_len.replace(n).is_some_and(|m| m != n) {
                        return Err("two Content-Lengths");
                    }
                }
                headers.push(l.to_string());
            }
        }
        if method.eq_ignore_ascii_case("CONNECT") {
            let (h, p) = split_host_port(target).ok_or("bad CONNECT target")?;
            check_host(h)?;
            return Ok(Request {
                connect: true,
                method: method.into(),
                host: h.to_string(),
                port: p.ok_or("a CONNECT target needs a port")?,
                path: String::new(),
                version: version.into(),
                host_header,
                headers,
                body_len: 0,
            });
        }
        let rest = target
            .strip_prefix("http://")
            .ok_or("only absolute http:// targets are forwarded (https goes through CONNECT)")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the target");
        }
        let (h, p) = split_host_port(authority).ok_or("bad target")?;
        check_host(h)?;
        Ok(Request {
            connect: false,
            method: method.into(),
            host: h.to_string(),
            port: p.unwrap_or(80),
            path: if path.starts_with('?') {
                format!("/{path}")
            } else {
                path.to_string()
            },
            version: version.into(),
            host_header,
            headers,
            body_len: body_len.unwrap_or(0),
        })
    }

    /// The head sent upstream: origin form, one request per connection.
    fn origin_form_head(&self) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.path, self.version);
        if let Some(h) = &self.host_header {
            s.push_str(&format!("Host: {h}\r\n"));
        }
        for h in &self.headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("Connection: close\r\n\r\n");
        s.into_bytes()
    }
}

/// A target must be a DNS name or an address literal: anything else is
/// refused as malformed (and what is recorded is then short and plain).
fn check_host(h: &str) -> Result<(), &'static str> {
    if h.parse::<IpAddr>().is_ok() || valid_name(h.trim_end_matches('.')) {
        Ok(())
    } else {
        Err("the target is not a host name or an address")
    }
}

/// Reads the tunnel's first TLS record into `buf` (which may already hold
/// its start) and returns the ClientHello's server name.
async fn client_hello_sni<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Option<String>, Refusal> {
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() >= 5 {
            if buf[0] != 0x16 || buf[1] != 0x03 {
                return Err(Refusal::NotTls);
            }
            let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                return parse_sni(&buf[5..5 + len]).ok_or(Refusal::NotTls);
            }
        }
        if buf.len() > MAX_HEAD + 5 {
            return Err(Refusal::NotTls);
        }
        let n = s.read(&mut chunk).await.map_err(|_| Refusal::NotTls)?;
        if n == 0 {
            return Err(Refusal::NotTls);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The server name of a ClientHello handshake message (`Some(None)`: none);
/// `None` when it is not a well-formed ClientHello.
fn parse_sni(h: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(h);
    if r.u8()? != 1 {
        return None;
    }
    let n = r.u24()?;
    let body = r.take(n)?;
    let mut r = Reader(body);
    r.take(2 + 32)?; // version, random
    let n = r.u8()? as usize;
    r.take(n)?; // session id
    let n = r.u16()? as usize;
    r.take(n)?; // cipher suites
    let n = r.u8()? as usize;
    r.take(n)?; // compression
    if r.0.is_empty() {
        return Some(None);
    }
    let n = r.u16()? as usize;
    let mut ext = Reader(r.take(n)?);
    let mut seen = BTreeSet::new();
    let mut name = None;
    while !ext.0.is_empty() {
        let (t, n) = (ext.u16()?, ext.u16()? as usize);
        let data = ext.take(n)?;
        if !seen.insert(t) {
            return None; // a repeated extension is malformed
        }
        if t == 0 {
            let mut l = Reader(data);
            let n = l.u16()? as usize;
            let mut list = Reader(l.take(n)?);
            let mut names = Vec::new();
            while !list.0.is_empty() {
                let kind = list.u8()?;
                let n = list.u16()? as usize;
                let v = list.take(n)?;
                if kind == 0 {
                    names.push(std::str::from_utf8(v).ok()?.to_string());
                }
            }
            // One host name, or the hello is not one we can judge.
            if names.len() != 1 {
                return None;
            }
            name = names.pop();
        }
    }
    Some(name)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
}

/// Runs one client's bytes through a proxy with a fixed list (under both
/// scopes), a resolver that maps names to public or private addresses and
/// a dialler that refuses, and panics if an invariant breaks: nothing is
/// dialled that was not decided allowed, nothing is allowed that the list
/// does not name (under `allowlist`), and no special address is dialled
/// that the list does not name (under both).
/// For the fuzz target `egress_request` and the seed mutation test.
#[doc(hidden)]
pub fn check_input(data: &[u8]) {
    /// Names under `inside.` resolve to a private address, the rest to a public one.
    struct Mixed;
    #[async_trait::async_trait]
    impl Resolve for Mixed {
        async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
            Ok(vec![if canonical(host).starts_with("inside.") {
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))
            } else {
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
            }])
        }
    }
    struct Refuse(Mutex<Vec<SocketAddr>>);
    #[async_trait::async_trait]
    impl Dial for Refuse {
        async fn dial(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
            if let Ok(mut d) = self.0.lock() {
                d.push(addr);
            }
            Err(std::io::Error::other("the fuzz dialler dials nothing"))
        }
    }
    let entries: Vec<String> = ["pkgs.test", "*.cdn.test:8443", "10.0.0.5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let Ok(list) = Allowlist::parse(&entries) else {
        return;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    for scope in [Scope::Only(list.clone()), Scope::Public(list.clone())] {
        let only = matches!(scope, Scope::Only(_));
        let dialler = Arc::new(Refuse(Mutex::new(Vec::new())));
        let proxy = Proxy::new(scope, Arc::new(Mixed), dialler.clone(), Caps::default());
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 << 10);
            let send = async {
                let _ = client.write_all(data).await;
                let _ = client.shutdown().await;
            };
            tokio::join!(send, proxy.handle(server));
        });
        let events = proxy.events();
        for e in &events {
            // An unlisted target is refused as unlisted: the list is read
            // before anything else is (a parse error or a cap may come first).
            if only && list.permits(&e.host, e.port).is_err() {
                let why = e.reason.as_deref().unwrap_or("");
                assert!(
                    !e.allowed
                        && e.addr.is_none()
                        && [
                            "not on the allowlist",
                            "raw address",
                            "not a proxy request",
                            "cap is reached"
                        ]
                        .iter()
                        .any(|w| why.contains(w)),
                    "an unlisted target got past the list: {e:?}"
                );
            }
        }
        let dialled = dialler.0.lock().map(|d| d.clone()).unwrap_or_default();
        assert!(dialled.len() <= 1, "one client, one connection at most");
        for a in &dialled {
            assert!(
                special(a.ip()).is_none() || list.names_address(a.ip()),
                "dialled a special address no entry names: {a}"
            );
            assert!(
                !only
                    || events
                        .last()
                        .is_some_and(|e| list.permits(&e.host, e.port).is_ok()),
                "dialled for an unlisted target: {events:?}"
            );
        }
    }
}
