//! Each system's route table ([`SystemSpec::routes`]) and its `on_http` agree: every route is
//! answered by `on_http`, with every method it allows, nothing else is, and every other method
//! on a route's path is a 405 carrying the table's `Allow`. A keyed route refuses a bad key
//! before it looks at the body.

mod common;
use common::*;
use switchboard_hub::Method;
use switchboard_protocol::spec::{Admission, Allow, KeyRule, PathPattern, RouteMatch};
use switchboard_protocol::{afc, collab, dcdock, laptimes, race, Options, SystemSpec};

const KEY: &str = "k-new";
const ALL_METHODS: [Method; 7] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Options,
    Method::Other,
];

/// A concrete path the pattern matches.
fn sample(p: PathPattern) -> String {
    match p {
        PathPattern::Exact(path) => path.to_string(),
        PathPattern::Prefix(prefix) => format!("{prefix}todo-created"),
        PathPattern::Between(prefix, suffix) => format!("{prefix}s1{suffix}"),
        _ => unreachable!("a pattern this test does not know"),
    }
}

/// Paths no system answers.
const FOREIGN: &[&str] = &[
    "/",
    "/metrics",
    "/ws",
    "/api/ws",
    "/favicon.ico",
    "/healthz",
];

fn check(spec: &'static SystemSpec) {
    let options = Options::default().with_api_key("k-old").with_api_key(KEY);
    let mut h = Harness::new(spec, options.clone());
    let key = [("x-api-key", KEY)];
    for route in spec.routes {
        let path = sample(route.path);
        let allow = Allow::of(route.methods);
        for m in ALL_METHODS {
            let r = h
                .http(m, &path, &key, "{}")
                .unwrap_or_else(|| panic!("{}: {m:?} {path} not answered", spec.name));
            if allow.contains(m) {
                assert_eq!(spec.route(m, &path), RouteMatch::Found(route));
                assert_ne!(r.status, 405, "{}: {m:?} {path}", spec.name);
                assert_ne!(r.status, 404, "{}: {m:?} {path}", spec.name);
            } else {
                assert_eq!(r.status, 405, "{}: {m:?} {path}", spec.name);
                assert_eq!(r.header("allow"), Some(allow.to_string().as_str()));
                assert_eq!(body_json(&r)["error"], "method not allowed");
                // The transport decides the same from the table alone.
                assert_eq!(
                    spec.admit(m, &path, &options, |_| None),
                    Admission::Refuse(r),
                    "{}: {m:?} {path}",
                    spec.name
                );
            }
        }
        // A keyed route refuses a wrong key before it reads the body: an unparsable body is
        // answered 401, not 400.
        if route.key != KeyRule::Open {
            let m = route.methods[0];
            let r = h
                .http(m, &path, &[("x-api-key", "k-wrong")], "{not json")
                .unwrap();
            assert_eq!(r.status, 401, "{}: {path}", spec.name);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            // Both keys are accepted (rotation), in either header form.
            for hdr in [
                ("x-api-key", "k-old"),
                ("authorization", "Bearer k-old"),
                ("authorization", "Bearer k-new"),
            ] {
                let r = h.http(m, &path, &[hdr], "{not json").unwrap();
                assert_eq!(r.status, 400, "{}: {path} {hdr:?}", spec.name);
            }
        }
    }
    for path in FOREIGN {
        for m in ALL_METHODS {
            assert!(
                h.http(m, path, &key, "{}").is_none(),
                "{}: {m:?} {path} answered",
                spec.name
            );
            assert_eq!(spec.route(m, path), RouteMatch::NotFound);
        }
    }
    assert!(h.closed.is_empty());
}

#[test]
fn laptimes_answers_no_http() {
    check(&laptimes::v1::SPEC);
    assert!(laptimes::v1::SPEC.routes.is_empty());
}

#[test]
fn afc_routes_match_on_http() {
    check(&afc::v1::SPEC);
    assert_eq!(
        afc::v1::SPEC.routes,
        &[afc::v1::EVENTS_ROUTE, afc::v1::HEALTH_ROUTE]
    );
    assert_eq!(afc::v1::EVENTS_ROUTE.key, KeyRule::IfConfigured);
}

#[test]
fn race_routes_match_on_http() {
    check(&race::v1::SPEC);
    assert_eq!(race::v1::PUBLISH_ROUTE.key, KeyRule::Required);
    let mut h = Harness::new(&race::v1::SPEC, Options::default());
    for path in [
        "/sessions/a/b/updates",
        "/sessions/s1",
        "/sessions/s1/update",
    ] {
        assert!(h.http(Method::Post, path, &[], "{}").is_none(), "{path}");
    }
}

#[test]
fn collab_routes_match_on_http() {
    check(&collab::v1::SPEC);
    assert_eq!(collab::v1::BROADCAST_ROUTE.key, KeyRule::IfConfigured);
}

#[test]
fn dcdock_routes_match_on_http() {
    check(&dcdock::v1::SPEC);
    assert_eq!(dcdock::v1::PUBLISH_ROUTE.key, KeyRule::Required);
}

/// The documented `Allow` values.
#[test]
fn allow_values_per_endpoint() {
    let cases: &[(&SystemSpec, &str, &str)] = &[
        (&afc::v1::SPEC, "/events/todo-created", "POST"),
        (&afc::v1::SPEC, "/health", "GET, HEAD"),
        (&race::v1::SPEC, "/sessions/race-2024/updates", "POST"),
        (&race::v1::SPEC, "/health", "GET, HEAD"),
        (&collab::v1::SPEC, "/health", "GET, HEAD"),
        (&collab::v1::SPEC, "/stats", "GET, HEAD"),
        (&collab::v1::SPEC, "/broadcast", "POST"),
        (&dcdock::v1::SPEC, "/api/ws/publish", "POST"),
        (&dcdock::v1::SPEC, "/api/ws/stats", "GET, HEAD"),
    ];
    for (spec, path, allow) in cases {
        let mut h = Harness::new(spec, Options::default());
        let r = h.http(Method::Delete, path, &[], "").unwrap();
        assert_eq!((r.status, r.header("allow")), (405, Some(*allow)), "{path}");
    }
}

/// Keys are checked before anything about the body: a Required endpoint without a configured key
/// is 403 and one with a configured key but a wrong one 401, whatever the body (here none).
#[test]
fn key_refusals_never_look_at_the_body() {
    for spec in [&race::v1::SPEC, &dcdock::v1::SPEC] {
        let publish = spec
            .routes
            .iter()
            .find(|r| r.key == KeyRule::Required)
            .unwrap();
        let path = sample(publish.path);
        let mut h = Harness::new(spec, Options::default());
        let r = h
            .http(Method::Post, &path, &[("x-api-key", KEY)], "")
            .unwrap();
        assert_eq!(r.status, 403, "{}", spec.name);
        assert_eq!(
            body_json(&r)["error"],
            format!("publishing disabled: set {}", spec.api_key_env)
        );
        let mut h = Harness::new(spec, Options::default().with_api_key(KEY));
        let r = h.http(Method::Post, &path, &[], "").unwrap();
        assert_eq!(r.status, 401, "{}", spec.name);
    }
}
