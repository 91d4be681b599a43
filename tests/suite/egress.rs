//! The egress proxy's decisions, end to end on loopback: test hosts are
//! listeners on 127.0.0.1 reached through names the test's own resolver
//! serves. Loopback is a special address, so the lists below that let a
//! connection through name it (`127.0.0.1`) — which is itself one of the
//! rules under test. No other address is dialled (the private and metadata
//! names are refused before any connection is made).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use toolgate::sandbox::egress::{Allowlist, Caps, Dial, Event, Proxy, Resolve, Scope, special};

struct Names(HashMap<&'static str, IpAddr>);

#[async_trait::async_trait]
impl Resolve for Names {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0
            .get(host)
            .map(|a| vec![*a])
            .ok_or_else(|| std::io::Error::other("no such name"))
    }
}

fn names() -> Arc<Names> {
    Arc::new(Names(HashMap::from([
        ("pkgs.test", "127.0.0.1".parse().unwrap()),
        ("mirror.pkgs.test", "127.0.0.1".parse().unwrap()),
        ("evil.test", "127.0.0.1".parse().unwrap()),
        ("private.test", "10.1.2.3".parse().unwrap()),
        ("meta.test", "169.254.169.254".parse().unwrap()),
        ("mapped.test", "::ffff:127.0.0.1".parse().unwrap()),
    ])))
}

/// Dials loopback only: were the proxy ever to let a non-loopback address
/// through, the test fails here instead of sending it a packet.
struct LoopbackOnly;

#[async_trait::async_trait]
impl Dial for LoopbackOnly {
    async fn dial(&self, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
        assert!(addr.ip().is_loopback(), "the proxy dialled {addr}");
        TcpStream::connect(addr).await
    }
}

/// A TLS ClientHello naming `sni` (enough of one for the proxy to read).
fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let mut list = vec![0u8];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name.as_bytes());
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(&data);
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // no compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A host that echoes what it gets, and records how many connections it saw.
async fn echo_host() -> (u16, Arc<Mutex<usize>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            *s.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// An HTTP host that answers each connection's first request with what it received.
async fn http_host() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let mut all = Vec::new();
                let mut buf = vec![0u8; 4096];
                // Read until the client is done sending (the proxy sends one request).
                while let Ok(Ok(n)) =
                    tokio::time::timeout(std::time::Duration::from_millis(300), c.read(&mut buf))
                        .await
                {
                    if n == 0 {
                        break;
                    }
                    all.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&all).into_owned();
                g.lock().unwrap().push(text.clone());
                let body = text.lines().next().unwrap_or("").to_string();
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, got)
}

async fn proxy(allow: &[String], caps: Caps) -> (u16, Arc<Proxy>) {
    let p = Proxy::new(
        Scope::Only(Allowlist::parse(allow).unwrap()),
        names(),
        Arc::new(LoopbackOnly),
        caps,
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(p.clone().serve(l));
    (port, p)
}

/// Sends `head` (and `then`) through the proxy; returns what came back.
async fn through(proxy: u16, head: &str, then: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    if !then.is_empty() {
        // The tunnel opens first; the hello follows.
        let mut buf = vec![0u8; 39];
        let _ = c.read_exact(&mut buf).await;
        c.write_all(then).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        let mut buf = vec![0u8; 65536];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if !then.is_empty() && out.len() >= then.len() {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn connect(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

fn last(p: &Proxy) -> Event {
    p.events().last().cloned().expect("an event")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn special_addresses_are_named_and_public_ones_are_not() {
    for (a, kind) in [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fd00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:7f00:1::1", "loopback"),
        ("ff02::1", "multicast"),
    ] {
        assert_eq!(special(a.parse().unwrap()), Some(kind), "{a}");
    }
    // Documentation ranges stand for public addresses here (never dialled).
    for a in ["198.51.100.7", "203.0.113.9", "2001:db8::1"] {
        assert_eq!(special(a.parse().unwrap()), None, "{a}");
    }
}

#[test]
fn allowlist_entries_are_checked() {
    for ok in [
        "pypi.example",
        "*.example.org",
        "host.example:8443",
        "10.0.0.5",
        "[fd00::1]:443",
        "Registry.Example.",
    ] {
        assert!(Allowlist::parse(&[ok.to_string()]).is_ok(), "{ok}");
    }
    for bad in [
        "*.com",
        "a b.example",
        "host.example:0",
        "host.example:99999",
        "http://x.example",
        "",
    ] {
        assert!(Allowlist::parse(&[bad.to_string()]).is_err(), "{bad:?}");
    }
}

#[test]
fn a_listed_host_is_tunnelled_and_everything_else_is_refused_with_its_reason() {
    let rt = rt();
    rt.block_on(async {
        let (tls, seen) = echo_host().await;
        let allow = vec![
            format!("pkgs.test:{tls}"),
            format!("*.pkgs.test:{tls}"),
            format!("private.test:{tls}"),
            format!("meta.test:{tls}"),
            "127.0.0.1".to_string(),
        ];
        let (p, proxy) = proxy(&allow, Caps::default()).await;
        // Allowed: the tunnel carries the hello to the host and back.
        let hello = client_hello(Some("pkgs.test"));
        let got = through(p, &connect(&format!("pkgs.test:{tls}")), &hello).await;
        assert!(got.as_bytes().ends_with(&hello), "{got:?}");
        let e = last(&proxy);
        assert!(e.allowed, "{e:?}");
        assert_eq!(e.addr, Some(format!("127.0.0.1:{tls}")));
        // A subdomain under a wildcard, too.
        let hello = client_hello(Some("mirror.pkgs.test"));
        let got = through(p, &connect(&format!("mirror.pkgs.test:{tls}")), &hello).await;
        assert!(got.as_bytes().ends_with(&hello));
        let hosts_before = *seen.lock().unwrap();
        assert_eq!(hosts_before, 2);

        let refused = |target: String, then: Vec<u8>, why: &'static str| {
            let proxy = proxy.clone();
            async move {
                let got = through(p, &connect(&target), &then).await;
                let e = last(&proxy);
                assert!(!e.allowed, "{target}: {e:?}");
                let reason = e.reason.clone().unwrap();
                assert!(reason.contains(why), "{target}: {reason}");
                // A refusal made before the tunnel opened says why.
                if then.is_empty() {
                    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
                    assert!(got.contains(why), "{got}");
                }
            }
        };
        // A name not listed, and a port not listed for a listed name.
        refused(format!("evil.test:{tls}"), vec![], "not on the allowlist").await;
        refused(
            "pkgs.test:22".into(),
            vec![],
            "port is not on the allowlist",
        )
        .await;
        // Raw addresses: only a listed one, on a listed port.
        refused(format!("127.0.0.2:{tls}"), vec![], "raw address").await;
        refused(format!("[::1]:{tls}"), vec![], "raw address").await;
        // Names that resolve to private or metadata addresses.
        refused(format!("private.test:{tls}"), vec![], "private address").await;
        refused(format!("meta.test:{tls}"), vec![], "link-local address").await;
        // SNI that is not the CONNECT host (fronting), no SNI, no TLS.
        let other = client_hello(Some("evil.test"));
        refused(format!("pkgs.test:{tls}"), other, "names \"evil.test\"").await;
        refused(
            format!("pkgs.test:{tls}"),
            client_hello(None),
            "names no server",
        )
        .await;
        refused(
            format!("pkgs.test:{tls}"),
            b"GET / HTTP/1.1\r\nHost: pkgs.test\r\n\r\n".to_vec(),
            "must carry TLS",
        )
        .await;
        // None of the refused ones reached the host.
        assert_eq!(*seen.lock().unwrap(), hosts_before);
        // A Host header naming another host.
        let got = through(
            p,
            &format!("CONNECT pkgs.test:{tls} HTTP/1.1\r\nHost: evil.test:{tls}\r\n\r\n"),
            &[],
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
        assert!(last(&proxy).reason.unwrap().contains("Host header"));
    });
}

#[test]
fn a_name_resolving_to_loopback_passes_only_when_the_address_is_listed() {
    let rt = rt();
    rt.block_on(async {
        let (tls, seen) = echo_host().await;
        let (p, proxy) = proxy(
            &[format!("pkgs.test:{tls}"), format!("mapped.test:{tls}")],
            Caps::default(),
        )
        .await;
        for host in ["pkgs.test", "mapped.test"] {
            let got = through(p, &connect(&format!("{host}:{tls}")), &[]).await;
            assert!(got.starts_with("HTTP/1.1 403"), "{got}");
            assert!(
                last(&proxy).reason.unwrap().contains("loopback address"),
                "{host}"
            );
        }
        assert_eq!(*seen.lock().unwrap(), 0);
    });
}

#[test]
fn plain_http_is_forwarded_one_request_with_its_host_checked() {
    let rt = rt();
    rt.block_on(async {
        let (web, got) = http_host().await;
        let allow = vec![format!("pkgs.test:{web}"), "127.0.0.1".to_string()];
        let (p, proxy) = proxy(&allow, Caps::default()).await;
        let req = format!(
            "GET http://pkgs.test:{web}/simple/x/?a=1 HTTP/1.1\r\nHost: pkgs.test:{web}\r\nProxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n"
        );
        // A second request pipelined behind the first never reaches the host.
        let second = format!("GET http://pkgs.test:{web}/two HTTP/1.1\r\nHost: evil.test\r\n\r\n");
        let answer = through(p, &(req + &second), &[]).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("GET /simple/x/?a=1 HTTP/1.1"), "{answer}");
        let seen = got.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains(&format!("Host: pkgs.test:{web}\r\n")), "{}", seen[0]);
        assert!(!seen[0].contains("Proxy-Authorization"), "proxy headers stay here");
        assert!(!seen[0].contains("/two"), "{}", seen[0]);
        assert!(last(&proxy).allowed);
        // Host header for another host; https in a plain request; no Host.
        for (req, why) in [
            (
                format!("GET http://pkgs.test:{web}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
                "Host header",
            ),
            (
                format!("GET https://pkgs.test:{web}/ HTTP/1.1\r\nHost: pkgs.test:{web}\r\n\r\n"),
                "absolute http://",
            ),
            (format!("GET http://pkgs.test:{web}/ HTTP/1.1\r\n\r\n"), "no Host header"),
            (
                format!("GET http://u:p@pkgs.test:{web}/ HTTP/1.1\r\nHost: pkgs.test:{web}\r\n\r\n"),
                "credentials",
            ),
            (
                format!("GET http://pkgs.test:{web}/ HTTP/1.1\r\nHost: pkgs.test:{web}\r\nX: a\nHost: evil.test\r\n\r\n"),
                "bare CR or LF",
            ),
            (
                format!("GET http://pkgs.test:{web}/ HTTP/1.1\r\nHost: pkgs.test:{web}\r\nX: a\r\n Host: evil.test\r\n\r\n"),
                "folded",
            ),
        ] {
            let answer = through(p, &req, &[]).await;
            assert!(
                answer.starts_with("HTTP/1.1 403") || answer.starts_with("HTTP/1.1 400"),
                "{req}: {answer}"
            );
            assert!(
                last(&proxy).reason.unwrap_or_default().contains(why),
                "{req}: {:?}",
                proxy.events()
            );
        }
        assert_eq!(got.lock().unwrap().len(), 1, "no refused request reached the host");
    });
}

#[test]
fn connections_and_bytes_are_capped_per_proxy() {
    let rt = rt();
    rt.block_on(async {
        let (tls, _) = echo_host().await;
        let allow = vec![format!("pkgs.test:{tls}"), "127.0.0.1".to_string()];
        let (p, proxy) = proxy(
            &allow,
            Caps {
                connections: 2,
                bytes: 64 << 10,
            },
        )
        .await;
        let hello = client_hello(Some("pkgs.test"));
        for _ in 0..2 {
            let got = through(p, &connect(&format!("pkgs.test:{tls}")), &hello).await;
            assert!(got.as_bytes().ends_with(&hello));
        }
        let got = through(p, &connect(&format!("pkgs.test:{tls}")), &[]).await;
        assert!(got.contains("connection cap"), "{got}");
        // Bytes: a fresh proxy with room for one connection's worth.
        let (p, _) = proxy_with_bytes(&allow, 8 << 10).await;
        let mut c = TcpStream::connect(("127.0.0.1", p)).await.unwrap();
        c.write_all(connect(&format!("pkgs.test:{tls}")).as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 39];
        c.read_exact(&mut buf).await.unwrap();
        c.write_all(&hello).await.unwrap();
        let junk = vec![b'x'; 64 << 10];
        let _ = c.write_all(&junk).await;
        let mut echoed = 0usize;
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), c.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            echoed += n;
        }
        assert!(
            echoed < 8 << 10,
            "the tunnel stopped at the cap: {echoed} bytes came back"
        );
        drop(proxy);
    });
}

async fn proxy_with_bytes(allow: &[String], bytes: u64) -> (u16, Arc<Proxy>) {
    proxy(
        allow,
        Caps {
            connections: 16,
            bytes,
        },
    )
    .await
}

/// A little internet of the test's own: a network namespace joined to this
/// one by a veth pair (198.51.100.1 here, 198.51.100.2 there; addresses
/// from a documentation range, so public-looking to the proxy) with an HTTP
/// server inside. Removed on drop. `None` (skip) without root or `ip`,
/// unless `TOOLGATE_REQUIRE_NATIVE=1`.
pub(super) struct Internet {
    ns: String,
    /// This side of the veth pair.
    here: String,
    server: std::process::Child,
    _files: tempfile::TempDir,
    /// One little internet at a time (they share a name and addresses).
    _one: std::sync::MutexGuard<'static, ()>,
}

pub(super) const THERE: &str = "198.51.100.2";

impl Internet {
    #[allow(clippy::disallowed_methods)] // ip(8) and python3 are the test's tools
    pub(super) fn new() -> Option<Internet> {
        static ONE: Mutex<()> = Mutex::new(());
        let one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let required = std::env::var_os("TOOLGATE_REQUIRE_NATIVE").is_some_and(|v| v == "1");
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let tag = format!("tg{}", std::process::id() % 100_000);
        let ns = format!("{tag}-net");
        let (here, there) = (format!("{tag}h"), format!("{tag}n"));
        // Leftovers of a run that was killed.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &here])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(std::process::Stdio::null())
            .status();
        if !ip(&["netns", "add", &ns]) {
            assert!(
                !required,
                "cannot create a network namespace (root and iproute2 needed)"
            );
            eprintln!("SKIPPED: the little internet needs root and iproute2");
            return None;
        }
        let files = tempfile::tempdir().unwrap();
        std::fs::write(
            files.path().join("hello.txt"),
            "hello from the little internet\n",
        )
        .unwrap();
        let ok = ip(&["link", "add", &here, "type", "veth", "peer", "name", &there])
            && ip(&["link", "set", &there, "netns", &ns])
            && ip(&["addr", "add", "198.51.100.1/30", "dev", &here])
            && ip(&["link", "set", &here, "up"])
            && ip(&["-n", &ns, "addr", "add", "198.51.100.2/30", "dev", &there])
            && ip(&["-n", &ns, "link", "set", &there, "up"])
            && ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                THERE,
            ])
            .arg("--directory")
            .arg(files.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let net = Internet {
            ns,
            here: here.clone(),
            server,
            _files: files,
            _one: one,
        };
        assert!(ok, "setting up the veth pair failed");
        // Up when it answers (the one non-loopback address this suite dials,
        // inside the namespace it made).
        let up = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::net::TcpStream::connect((THERE, 8080)).is_ok()
        });
        assert!(up, "the little internet's server did not start");
        Some(net)
    }
}

impl Drop for Internet {
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Deleting one end deletes the pair, now (a namespace's own devices
        // go later, in the background, and the next one would clash).
        for args in [
            vec!["link", "del", self.here.as_str()],
            vec!["netns", "del", self.ns.as_str()],
        ] {
            let _ = std::process::Command::new("ip").args(args).status();
        }
    }
}

/// Dials loopback and the little internet only.
struct OursOnly;

#[async_trait::async_trait]
impl Dial for OursOnly {
    async fn dial(&self, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
        assert!(
            addr.ip().is_loopback() || addr.ip().to_string() == THERE,
            "the proxy dialled {addr}"
        );
        TcpStream::connect(addr).await
    }
}

#[test]
fn a_listed_name_with_a_public_address_is_reached_without_naming_the_address() {
    let Some(_net) = Internet::new() else { return };
    let rt = rt();
    rt.block_on(async {
        let resolver = Arc::new(Names(HashMap::from([
            ("pkgs.test", THERE.parse().unwrap()),
            ("inside.test", "10.9.9.9".parse().unwrap()),
        ])));
        let p = Proxy::new(
            Scope::Only(
                Allowlist::parse(&["pkgs.test:8080".into(), "inside.test:8080".into()]).unwrap(),
            ),
            resolver,
            Arc::new(OursOnly),
            Caps::default(),
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(p.clone().serve(l));
        let got = through(
            port,
            "GET http://pkgs.test:8080/hello.txt HTTP/1.1\r\nHost: pkgs.test:8080\r\n\r\n",
            &[],
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.0 200") || got.starts_with("HTTP/1.1 200"),
            "{got}"
        );
        assert!(got.ends_with("hello from the little internet\n"), "{got}");
        assert_eq!(last(&p).addr, Some(format!("{THERE}:8080")));
        // A listed name that resolves to a private address is not dialled.
        let got = through(
            port,
            "GET http://inside.test:8080/hello.txt HTTP/1.1\r\nHost: inside.test:8080\r\n\r\n",
            &[],
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 403") && got.contains("private address"),
            "{got}"
        );
    });
}

#[test]
fn under_open_any_public_host_is_reached_and_no_special_address_unless_named() {
    let Some(_net) = Internet::new() else { return };
    let rt = rt();
    rt.block_on(async {
        let (echo, seen) = echo_host().await;
        let resolver = Arc::new(Names(HashMap::from([
            ("anything.test", THERE.parse().unwrap()),
            ("inside.test", "10.9.9.9".parse().unwrap()),
            ("meta.test", "169.254.169.254".parse().unwrap()),
            ("home.test", "127.0.0.1".parse().unwrap()),
            ("mapped.test", "::ffff:127.0.0.1".parse().unwrap()),
        ])));
        let open = |named: &[String]| {
            Proxy::new(
                Scope::Public(Allowlist::parse(named).unwrap()),
                resolver.clone(),
                Arc::new(OursOnly),
                Caps::default(),
            )
        };
        let serve = |p: Arc<Proxy>| async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(p.serve(l));
            port
        };
        let p = open(&[]);
        let port = serve(p.clone()).await;
        // A public host no entry names, by name and by address.
        for target in ["anything.test:8080", "198.51.100.2:8080"] {
            let got = through(
                port,
                &format!("GET http://{target}/hello.txt HTTP/1.1\r\nHost: {target}\r\n\r\n"),
                &[],
            )
            .await;
            assert!(
                got.ends_with("hello from the little internet\n"),
                "{target}: {got}"
            );
            assert!(last(&p).allowed);
        }
        // The host (loopback), another sandbox or a container (private),
        // the metadata service (link-local), however named: refused
        // before anything is dialled (OursOnly would fail the test).
        for (target, kind) in [
            ("home.test:80", "loopback"),
            ("mapped.test:80", "loopback"),
            (&*format!("127.0.0.1:{echo}"), "loopback"),
            ("[::1]:80", "loopback"),
            ("inside.test:80", "private"),
            ("172.17.0.2:80", "private"),
            ("meta.test:80", "link-local"),
            ("169.254.169.254:80", "link-local"),
            ("[fd00::1]:443", "unique-local"),
            ("100.64.0.1:443", "CGNAT"),
        ] {
            let got = through(port, &connect(target), &[]).await;
            assert!(got.starts_with("HTTP/1.1 403"), "{target}: {got}");
            let e = last(&p);
            assert!(
                !e.allowed && e.reason.as_deref().is_some_and(|r| r.contains(kind)),
                "{target}: {e:?}"
            );
        }
        assert_eq!(*seen.lock().unwrap(), 0, "the host's listener was reached");
        // Named by address, the host's listener is reached; a tunnel may
        // carry anything (every public name is allowed, so there is no
        // fronting to stop).
        let p = open(&[format!("127.0.0.1:{echo}")]);
        let port = serve(p.clone()).await;
        let got = through(port, &connect(&format!("127.0.0.1:{echo}")), b"not tls").await;
        assert!(got.ends_with("not tls"), "{got}");
        assert!(last(&p).allowed);
        assert_eq!(*seen.lock().unwrap(), 1);
    });
}
