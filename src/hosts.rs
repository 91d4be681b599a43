//! The policy's `network.allow_hosts`: one grammar, read by the policy
//! (checked when it loads), the egress proxy (which connections may leave
//! a sandbox) and the output filter (which links may stay in the output).
//!
//! An entry is `host` (ports 80 and 443), `*.host` (names strictly below
//! `host`, never `host` itself), `host:port`, or an address (`10.0.0.5`,
//! `[fd00::1]:443`). Names compare without case and without a trailing dot.
//! Pure: resolves nothing.

use std::net::{IpAddr, Ipv6Addr};

/// A bad entry, said when the policy loads.
#[derive(Debug, thiserror::Error)]
#[error("allow_hosts entry {entry:?}: {why}")]
pub struct HostsError {
    pub entry: String,
    pub why: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A name, lowercase, no trailing dot.
    Host(String),
    /// `*.suffix`: names strictly below `suffix`.
    Below(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: Pattern,
    /// `None`: ports 80 and 443.
    port: Option<u16>,
}

/// Parsed `allow_hosts`.
#[derive(Debug, Clone, Default)]
pub struct HostList {
    entries: Vec<Entry>,
}

/// Why a target is not on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No entry names the host.
    Host,
    /// No entry names the address (a raw address was asked for).
    Address,
    /// The host is named, not with this port.
    Port,
}

/// A name as compared: lowercase, without a trailing dot.
pub fn canonical(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS name: labels of letters, digits and `-`, at most 253 characters.
pub fn valid_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Splits `host:port`, `[v6]:port`, `v6`, `host`; `None` for a bad port.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        return match tail {
            "" => Some((h, None)),
            t => Some((h, Some(t.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((s, None)),
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address.
pub fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl HostList {
    pub fn parse(entries: &[String]) -> Result<HostList, HostsError> {
        let mut out = Vec::new();
        for e in entries {
            let bad = |why| HostsError {
                entry: e.clone(),
                why,
            };
            let (host, port) = split_host_port(e.trim()).ok_or_else(|| bad("not host[:port]"))?;
            if port == Some(0) {
                return Err(bad("port 0"));
            }
            let pattern = if let Ok(a) = host.parse::<IpAddr>() {
                Pattern::Addr(unmap(a))
            } else if let Some(s) = host.strip_prefix("*.") {
                let s = canonical(s);
                if !valid_name(&s) || !s.contains('.') {
                    return Err(bad("a wildcard needs a domain of two labels or more"));
                }
                Pattern::Below(s)
            } else {
                let h = canonical(host);
                if !valid_name(&h) {
                    return Err(bad("not a host name or an address"));
                }
                Pattern::Host(h)
            };
            out.push(Entry { pattern, port });
        }
        Ok(HostList { entries: out })
    }

    fn names(e: &Entry, h: &str, addr: Option<IpAddr>) -> bool {
        match (&e.pattern, addr) {
            (Pattern::Addr(a), Some(b)) => *a == unmap(b),
            (Pattern::Host(n), None) => n == h,
            (Pattern::Below(s), None) => {
                h.len() > s.len() + 1
                    && h.ends_with(s.as_str())
                    && h[..h.len() - s.len()].ends_with('.')
            }
            _ => false,
        }
    }

    fn parse_host(host: &str) -> (String, Option<IpAddr>) {
        let h = canonical(host);
        let addr = h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        (h, addr)
    }

    /// Whether a connection to `host` (a name or an address literal) on
    /// `port` is listed.
    pub fn permits(&self, host: &str, port: u16) -> Result<(), Miss> {
        let (h, addr) = Self::parse_host(host);
        let named: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| Self::names(e, &h, addr))
            .collect();
        if named.is_empty() {
            return Err(if addr.is_some() {
                Miss::Address
            } else {
                Miss::Host
            });
        }
        let port_ok = |e: &&Entry| match e.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        if !named.iter().any(port_ok) {
            return Err(Miss::Port);
        }
        Ok(())
    }

    /// Whether an entry names `host`, on any port (a link in the output).
    pub fn names_host(&self, host: &str) -> bool {
        let (h, addr) = Self::parse_host(host);
        self.entries.iter().any(|e| Self::names(e, &h, addr))
    }

    /// Whether an entry names this address itself (letting a special one through).
    pub fn names_address(&self, a: IpAddr) -> bool {
        let a = unmap(a);
        self.entries
            .iter()
            .any(|e| matches!(e.pattern, Pattern::Addr(b) if a == b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(e: &[&str]) -> HostList {
        HostList::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn entries_name_hosts_ports_and_addresses() {
        let l = list(&[
            "pkgs.example",
            "*.cdn.example",
            "git.example:8443",
            "10.0.0.5",
            "[fd00::1]:443",
        ]);
        assert_eq!(l.permits("PKGS.example.", 443), Ok(()));
        assert_eq!(l.permits("pkgs.example", 80), Ok(()));
        assert_eq!(l.permits("pkgs.example", 22), Err(Miss::Port));
        assert_eq!(l.permits("sub.pkgs.example", 443), Err(Miss::Host));
        assert_eq!(l.permits("a.cdn.example", 443), Ok(()));
        assert_eq!(l.permits("cdn.example", 443), Err(Miss::Host));
        assert_eq!(l.permits("xcdn.example", 443), Err(Miss::Host));
        assert_eq!(l.permits("git.example", 8443), Ok(()));
        assert_eq!(l.permits("git.example", 443), Err(Miss::Port));
        assert_eq!(l.permits("10.0.0.5", 80), Ok(()));
        assert_eq!(l.permits("::ffff:10.0.0.5", 80), Ok(()));
        assert_eq!(l.permits("10.0.0.6", 80), Err(Miss::Address));
        assert_eq!(l.permits("[fd00::1]", 443), Ok(()));
        assert!(l.names_address("10.0.0.5".parse().unwrap()));
        assert!(!l.names_address("10.0.0.6".parse().unwrap()));
        assert!(l.names_host("git.example") && !l.names_host("evil.example"));
    }

    #[test]
    fn bad_entries_say_why() {
        for bad in [
            "*.com",
            "a b.example",
            "x.example:0",
            "x.example:99999",
            "http://x.example",
            "",
        ] {
            let e = HostList::parse(&[bad.to_string()]).unwrap_err();
            assert!(e.to_string().contains("allow_hosts entry"), "{bad:?}: {e}");
        }
    }
}
