//! Who may talk to the API: the `Host` check (against DNS rebinding) and the bearer token.
//!
//! A web page can make a browser send requests to `127.0.0.1` by pointing a DNS name it
//! controls at it (DNS rebinding); the browser then sends that name as `Host`. So every
//! request, `/healthz` included, must name this server: for a loopback connection
//! `127.0.0.1`, `localhost` or `[::1]`; always the address the connection arrived on
//! (which for a wildcard bind such as `0.0.0.0` is the interface's own address); and any
//! `--allow-host` name (a DNS name in front of a proxy, say). A port, when given, must be
//! the server's, except for `--allow-host NAME` without a port (a proxy may add its own).
//!
//! With a token, every endpoint but `/healthz` needs `Authorization: Bearer <token>`;
//! DELETE needs it always (and is refused when no token is configured).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// How a connection reached the server; inserted into each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The server's end (address and port the client connected to).
    pub local: SocketAddr,
    /// The client's end.
    pub remote: SocketAddr,
}

/// The `Host` values the server answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    bind: SocketAddr,
    /// `--allow-host` entries, lower case: (name, port if given).
    allowed: Vec<(String, Option<u16>)>,
}

impl HostPolicy {
    /// The policy for a server bound to `bind` with these `--allow-host` values.
    pub fn new(bind: SocketAddr, allow_hosts: &[String]) -> anyhow::Result<HostPolicy> {
        let mut allowed = Vec::new();
        for h in allow_hosts {
            match split_host(h) {
                Some((name, port)) if !name.is_empty() => allowed.push((name, port)),
                _ => anyhow::bail!(
                    "--allow-host `{h}` is not a host name: give a name such as onramp.internal or onramp.internal:8080"
                ),
            }
        }
        Ok(HostPolicy { bind, allowed })
    }

    /// True when a request with this `Host` header, on a connection that arrived at
    /// `local` (the bind address when unknown), names this server.
    pub fn allows(&self, host: Option<&str>, local: Option<SocketAddr>) -> bool {
        let Some((name, port)) = host.and_then(split_host) else {
            return false;
        };
        let local = local.unwrap_or(self.bind);
        if self
            .allowed
            .iter()
            .any(|(n, p)| *n == name && (p.is_none() || *p == port))
        {
            return true;
        }
        if port.is_some_and(|p| p != local.port()) {
            return false;
        }
        let own = |ip: IpAddr| {
            !ip.is_unspecified()
                && name
                    .parse::<IpAddr>()
                    .is_ok_and(|n| n.to_canonical() == ip.to_canonical())
        };
        let loopback = local.ip().to_canonical().is_loopback() || self.bind.ip().is_loopback();
        own(local.ip())
            || own(self.bind.ip())
            || (loopback
                && (name == "localhost"
                    || own(IpAddr::from([127, 0, 0, 1]))
                    || own(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))))
    }
}

/// `host[:port]` or `[v6][:port]`, lower-cased and without a trailing dot; `None` when
/// the port is not a number.
fn split_host(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim();
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        match after {
            "" => (name, None),
            p => (name, Some(p.strip_prefix(':')?)),
        }
    } else {
        match value.rsplit_once(':') {
            Some((name, p)) if !name.contains(':') => (name, Some(p)),
            Some(_) => return None,
            None => (value, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    Some((name, port))
}

/// True when the request carries `Authorization: Bearer <token>` (scheme in any case).
/// Compared in constant time in the token's content.
pub fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Equality whose time depends on the lengths only, never on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// A loopback bind answers to 127.0.0.1, localhost and [::1], with its port or none,
    /// and refuses any other name (what a DNS-rebinding page sends) or another port.
    #[test]
    fn loopback_bind_accepts_only_loopback_names() {
        let p = HostPolicy::new(addr("127.0.0.1:7878"), &[]).expect("policy");
        let local = Some(addr("127.0.0.1:7878"));
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST:7878",
            "localhost.:7878",
            "[::1]:7878",
            "127.0.0.1",
            "localhost",
            "[::1]",
        ] {
            assert!(p.allows(Some(ok), local), "{ok} is allowed");
        }
        for bad in [
            "evil.example:7878",
            "evil.example",
            "localhost:7879",
            "127.0.0.1:80",
            "127.0.0.2:7878",
            "localhost.evil.example:7878",
            "",
            "[::1",
            "localhost:x",
        ] {
            assert!(!p.allows(Some(bad), local), "{bad} is refused");
        }
        assert!(!p.allows(None, local), "a missing Host is refused");
    }

    /// A wildcard bind answers to the address each connection arrived on (and loopback
    /// names on a loopback connection), plus `--allow-host` names with any port unless
    /// one is given.
    #[test]
    fn wildcard_bind_accepts_its_own_address_and_allowed_names() {
        let p = HostPolicy::new(
            addr("0.0.0.0:7878"),
            &["Onramp.Internal".into(), "api.example:8443".into()],
        )
        .expect("policy");
        let lan = Some(addr("10.1.2.3:7878"));
        assert!(p.allows(Some("10.1.2.3:7878"), lan));
        assert!(p.allows(Some("10.1.2.3"), lan));
        assert!(!p.allows(Some("10.1.2.4:7878"), lan));
        assert!(!p.allows(Some("0.0.0.0:7878"), lan));
        assert!(!p.allows(Some("localhost:7878"), lan), "not on a LAN connection");
        assert!(p.allows(Some("localhost:7878"), Some(addr("127.0.0.1:7878"))));
        assert!(p.allows(Some("onramp.internal"), lan));
        assert!(p.allows(Some("onramp.internal:443"), lan));
        assert!(p.allows(Some("api.example:8443"), lan));
        assert!(!p.allows(Some("api.example:443"), lan));
        assert!(!p.allows(Some("api.example"), lan));
        // IPv4-mapped connections on a dual-stack bind.
        let p6 = HostPolicy::new(addr("[::]:7878"), &[]).expect("policy");
        assert!(p6.allows(Some("10.1.2.3:7878"), Some(addr("[::ffff:10.1.2.3]:7878"))));
        assert!(p6.allows(Some("localhost"), Some(addr("[::ffff:127.0.0.1]:7878"))));
        assert!(HostPolicy::new(addr("0.0.0.0:1"), &[":80".into()]).is_err());
    }

    /// The token must be exact; the scheme is case-insensitive.
    #[test]
    fn bearer_token_must_match_exactly() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().expect("header value"));
            h
        };
        assert!(token_matches(&with("Bearer s3cret"), "s3cret"));
        assert!(token_matches(&with("bearer s3cret"), "s3cret"));
        assert!(!token_matches(&with("Bearer s3cre"), "s3cret"));
        assert!(!token_matches(&with("Bearer s3cret2"), "s3cret"));
        assert!(!token_matches(&with("Basic s3cret"), "s3cret"));
        assert!(!token_matches(&with("s3cret"), "s3cret"));
        assert!(!token_matches(&HeaderMap::new(), "s3cret"));
    }
}
