//! What the admin listener refuses before looking at a route: a method that is not a read, a
//! request another site's page made, and (when no token guards it) a `Host` that is not this
//! machine's, so a page whose name was rebound to 127.0.0.1 cannot read the inspector either.

use hyper::header::{self, HeaderMap};
use hyper::Method;

/// Whether the method only reads: `GET` or `HEAD`.
pub fn reads(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Why a request looks cross-site, if it does: `Sec-Fetch-Site` says another site (or a
/// sibling one) started it, or its `Origin` is not the listener's own (`http://` and its `Host`).
pub fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        match site.to_str().unwrap_or("").trim() {
            "same-origin" | "none" => {}
            _ => return Some("Sec-Fetch-Site is not same-origin"),
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .is_some_and(|authority| !host.is_empty() && authority.eq_ignore_ascii_case(host));
    (!same).then_some("Origin is not this listener")
}

/// Whether `Host` names this machine: `localhost` or a loopback address, with any port.
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_reads() {
        assert!(reads(&Method::GET) && reads(&Method::HEAD));
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            assert!(!reads(&m), "{m}");
        }
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let host = ("host", "127.0.0.1:9090");
        assert_eq!(cross_site(&headers(&[host])), None);
        for site in ["same-origin", "none"] {
            assert_eq!(
                cross_site(&headers(&[host, ("sec-fetch-site", site)])),
                None
            );
        }
        for site in ["cross-site", "same-site", "garbage"] {
            assert!(cross_site(&headers(&[host, ("sec-fetch-site", site)])).is_some());
        }
        assert_eq!(
            cross_site(&headers(&[host, ("origin", "http://127.0.0.1:9090")])),
            None
        );
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9091",
            "https://127.0.0.1:9090",
            "null",
        ] {
            assert!(
                cross_site(&headers(&[host, ("origin", origin)])).is_some(),
                "{origin}"
            );
        }
        assert!(cross_site(&headers(&[("origin", "http://x")])).is_some());
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:9090",
            "127.0.0.1",
            "127.0.0.1:9090",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:9090",
        ] {
            assert!(loopback_host(&headers(&[("host", host)])), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9090",
            "10.0.0.1:9090",
            "[::2]:1",
        ] {
            assert!(!loopback_host(&headers(&[("host", host)])), "{host}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }
}
