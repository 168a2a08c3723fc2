//! Every route × every kind of caller: the expected answer for each, and
//! no refusal that names or reveals a resource.
//!
//! The routes come from the router itself (`rill::api::routes`, the list
//! it is built from, cross-checked by probing every path with every
//! method: whatever does not answer 405 is a route), and each must appear
//! in `ROUTES` below, which says independently of the server's policy
//! table which operations a route needs and what it touches. A new route
//! therefore fails this test until someone decides what it needs; a route
//! that skips its check fails it too. (The router also refuses to build
//! with a route that has no policy at all.)

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ROOT: &str = "matrix-root-token-0123456789abcdefghijklmnop";

/// What a route touches, besides needing its operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Touches {
    Nothing,
    Basin,
    /// A stream, collection or consumer source in the basin.
    Stream,
    /// The access token id `victim-…`.
    TokenId,
    /// Issues `{"id": "child-…", "scope": {"ops": ["read"], "basins": {"prefix": "alpha"}}}`.
    IssuesToken,
    Public,
    /// A stream of the Durable Streams basin (`durable-streams`).
    DurableStream,
}

struct Route {
    method: &'static str,
    path: &'static str,
    ops: &'static [&'static str],
    touches: Touches,
    /// The basin and stream are found through the consumer, so its
    /// existence shows to a token allowed the basin.
    via_consumer: bool,
}

const fn r(
    method: &'static str,
    path: &'static str,
    ops: &'static [&'static str],
    touches: Touches,
) -> Route {
    Route {
        method,
        path,
        ops,
        touches,
        via_consumer: false,
    }
}

const fn c(method: &'static str, path: &'static str, ops: &'static [&'static str]) -> Route {
    Route {
        method,
        path,
        ops,
        touches: Touches::Stream,
        via_consumer: true,
    }
}

use Touches::*;

/// What each route needs, written down apart from the server's table.
/// Deletes come last, the basin's very last, so earlier rows act on
/// resources that exist.
const ROUTES: &[Route] = &[
    r("GET", "/health", &[], Public),
    r("GET", "/ready", &[], Public),
    r("GET", "/openapi.json", &[], Public),
    r("GET", "/", &[], Public),
    r("GET", "/console", &[], Public),
    r("GET", "/console/", &[], Public),
    r("GET", "/console/{file}", &[], Public),
    r("GET", "/v1/basins", &["list-basins"], Nothing),
    r("POST", "/v1/basins", &["create-basin"], Basin),
    r("GET", "/v1/basins/{basin}", &["get-basin-config"], Basin),
    r(
        "PUT",
        "/v1/basins/{basin}",
        &["create-basin", "reconfigure-basin"],
        Basin,
    ),
    r("PATCH", "/v1/basins/{basin}", &["reconfigure-basin"], Basin),
    r("GET", "/v1/streams", &["list-streams"], Basin),
    r("POST", "/v1/streams", &["create-stream"], Stream),
    r(
        "GET",
        "/v1/streams/{stream}",
        &["get-stream-config"],
        Stream,
    ),
    r(
        "PUT",
        "/v1/streams/{stream}",
        &["create-stream", "reconfigure-stream"],
        Stream,
    ),
    r(
        "PATCH",
        "/v1/streams/{stream}",
        &["reconfigure-stream"],
        Stream,
    ),
    r("GET", "/v1/streams/{stream}/records", &["read"], Stream),
    r("POST", "/v1/streams/{stream}/records", &["append"], Stream),
    r(
        "GET",
        "/v1/streams/{stream}/records/tail",
        &["check-tail"],
        Stream,
    ),
    r("GET", "/v1/access-tokens", &["list-access-tokens"], Nothing),
    r(
        "POST",
        "/v1/access-tokens",
        &["issue-access-token"],
        IssuesToken,
    ),
    r("GET", "/v1/collections", &["list-streams"], Basin),
    r(
        "GET",
        "/v1/collections/{collection}",
        &["get-stream-config"],
        Stream,
    ),
    r(
        "PUT",
        "/v1/collections/{collection}",
        &["create-stream", "reconfigure-stream"],
        Stream,
    ),
    r(
        "PATCH",
        "/v1/collections/{collection}",
        &["reconfigure-stream"],
        Stream,
    ),
    r(
        "POST",
        "/v1/collections/{collection}/records",
        &["append"],
        Stream,
    ),
    r(
        "GET",
        "/v1/collections/{collection}/records/{id}",
        &["read"],
        Stream,
    ),
    r(
        "PUT",
        "/v1/collections/{collection}/records/{id}",
        &["append"],
        Stream,
    ),
    r(
        "DELETE",
        "/v1/collections/{collection}/records/{id}",
        &["append"],
        Stream,
    ),
    r(
        "GET",
        "/v1/collections/{collection}/updated",
        &["read"],
        Stream,
    ),
    r(
        "GET",
        "/v1/collections/{collection}/events",
        &["read"],
        Stream,
    ),
    r("GET", "/v1/updated", &["read"], Stream),
    r("GET", "/v1/consumers", &["get-basin-config"], Basin),
    r(
        "GET",
        "/v1/consumers/{consumer}",
        &["get-basin-config"],
        Basin,
    ),
    r(
        "PUT",
        "/v1/consumers/{consumer}",
        &["reconfigure-basin", "read"],
        Stream,
    ),
    c(
        "PATCH",
        "/v1/consumers/{consumer}",
        &["reconfigure-basin", "read"],
    ),
    c("POST", "/v1/consumers/{consumer}/receive", &["read"]),
    c("POST", "/v1/consumers/{consumer}/ack", &["read"]),
    c("POST", "/v1/consumers/{consumer}/nack", &["read"]),
    c("POST", "/v1/consumers/{consumer}/extend", &["read"]),
    c("POST", "/v1/consumers/{consumer}/commit", &["read"]),
    c("POST", "/v1/consumers/{consumer}/reject", &["read"]),
    c("POST", "/v1/consumers/{consumer}/replay", &["read"]),
    r("GET", "/v1/sinks", &["get-basin-config"], Basin),
    r("GET", "/v1/sinks/{sink}", &["get-basin-config"], Basin),
    r(
        "PUT",
        "/v1/sinks/{sink}",
        &["reconfigure-basin", "read"],
        Stream,
    ),
    r("PATCH", "/v1/sinks/{sink}", &["reconfigure-basin"], Basin),
    r(
        "POST",
        "/v1/sinks/{sink}/pause",
        &["reconfigure-basin"],
        Basin,
    ),
    r(
        "POST",
        "/v1/sinks/{sink}/resume",
        &["reconfigure-basin"],
        Basin,
    ),
    r("DELETE", "/v1/sinks/{sink}", &["reconfigure-basin"], Basin),
    r("GET", "/v1/sources", &["get-basin-config"], Basin),
    r("GET", "/v1/sources/{source}", &["get-basin-config"], Basin),
    r(
        "PUT",
        "/v1/sources/{source}",
        &["reconfigure-basin", "append", "create-stream"],
        Stream,
    ),
    r(
        "DELETE",
        "/v1/sources/{source}",
        &["reconfigure-basin"],
        Basin,
    ),
    r(
        "PUT",
        "/v1/stream/{*path}",
        &["create-stream", "append"],
        DurableStream,
    ),
    r("POST", "/v1/stream/{*path}", &["append"], DurableStream),
    r("GET", "/v1/stream/{*path}", &["read"], DurableStream),
    r("OPTIONS", "/v1/stream/{*path}", &[], Public),
    r(
        "DELETE",
        "/v1/stream/{*path}",
        &["delete-stream"],
        DurableStream,
    ),
    r("GET", "/v1/metrics", &["account-metrics"], Nothing),
    r("GET", "/metrics", &["account-metrics"], Nothing),
    r("GET", "/v1/metrics/{basin}", &["basin-metrics"], Basin),
    r(
        "GET",
        "/v1/metrics/{basin}/{stream}",
        &["stream-metrics"],
        Stream,
    ),
    r(
        "DELETE",
        "/v1/access-tokens/{id}",
        &["revoke-access-token"],
        TokenId,
    ),
    r(
        "DELETE",
        "/v1/consumers/{consumer}",
        &["reconfigure-basin"],
        Basin,
    ),
    r(
        "DELETE",
        "/v1/collections/{collection}",
        &["delete-stream"],
        Stream,
    ),
    r("DELETE", "/v1/streams/{stream}", &["delete-stream"], Stream),
    r("DELETE", "/v1/basins/{basin}", &["delete-basin"], Basin),
];

const ALL_OPS: &[&str] = &[
    "list-basins",
    "create-basin",
    "delete-basin",
    "reconfigure-basin",
    "get-basin-config",
    "issue-access-token",
    "revoke-access-token",
    "list-access-tokens",
    "list-streams",
    "create-stream",
    "delete-stream",
    "get-stream-config",
    "reconfigure-stream",
    "check-tail",
    "append",
    "read",
    "trim",
    "fence",
    "account-metrics",
    "basin-metrics",
    "stream-metrics",
];

/// What S2 documents the stream group's read permission to hold.
const STREAM_READ_GROUP: &[&str] = &["read", "check-tail", "get-stream-config", "stream-metrics"];

/// A caller, and what the test expects it may do.
struct Caller {
    name: &'static str,
    /// The `Authorization` header value, if any.
    authorization: Option<String>,
    grant: Grant,
}

enum Grant {
    /// Every request but `/health` is 401.
    Nothing,
    Everything,
    Scoped {
        ops: &'static [&'static str],
        /// `Some(p)`: basin names starting with `p`; `None`: exactly `beta`.
        basin_prefix: Option<&'static str>,
        all_streams: bool,
        all_token_ids: bool,
    },
}

impl Caller {
    fn allows(&self, route: &Route, basin: &str) -> bool {
        let Grant::Scoped {
            ops,
            basin_prefix,
            all_streams,
            all_token_ids,
        } = &self.grant
        else {
            return matches!(self.grant, Grant::Everything) || route.touches == Public;
        };
        let basin_ok = |name: &str| basin_prefix.is_some_and(|p| name.starts_with(p));
        route.ops.iter().all(|op| ops.contains(op))
            && match route.touches {
                Public | Nothing => true,
                Basin => basin_ok(basin),
                Stream => basin_ok(basin) && *all_streams,
                DurableStream => basin_ok("durable-streams") && *all_streams,
                TokenId => *all_token_ids,
                // The child is scoped to basins `alpha*` with `read`.
                IssuesToken => {
                    *all_token_ids
                        && ops.contains(&"read")
                        && matches!(basin_prefix, Some("") | Some("alpha"))
                }
            }
    }

    /// Why a refused request is refused: the consumer's source is looked
    /// up only after the operation and the basin passed.
    fn refuses_before_lookup(&self, route: &Route, basin: &str) -> bool {
        let Grant::Scoped {
            ops, basin_prefix, ..
        } = &self.grant
        else {
            return true;
        };
        !route.ops.iter().all(|op| ops.contains(op))
            || !basin_prefix.is_some_and(|p| basin.starts_with(p))
    }
}

fn scoped_token(id: &str, scope: Value) -> Value {
    json!({ "id": id, "scope": scope })
}

async fn issue(server: &TestServer, info: Value) -> String {
    let resp = server
        .bare(Method::POST, "/v1/access-tokens")
        .bearer_auth(ROOT)
        .json(&info)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "issue {info}: {body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// Names a route's placeholders stand for in one run.
struct Names {
    basin: String,
    stream: &'static str,
    collection: &'static str,
    consumer: &'static str,
    token_id: String,
}

impl Names {
    fn existing(caller: &str) -> Self {
        Names {
            basin: format!("alpha-{caller}"),
            stream: "s1",
            collection: "c1",
            consumer: "k1",
            token_id: format!("victim-{caller}"),
        }
    }

    fn missing() -> Self {
        Names {
            basin: "alpha-missing".into(),
            stream: "s-missing",
            collection: "c-missing",
            consumer: "k-missing",
            token_id: "victim-missing".into(),
        }
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.basin,
            self.stream,
            self.collection,
            self.consumer,
            &self.token_id,
        ]
    }

    fn path(&self, template: &str) -> String {
        template
            .replace("{basin}", &self.basin)
            .replace("{stream}", self.stream)
            .replace("{*path}", self.stream)
            .replace("{collection}", self.collection)
            .replace("{consumer}", self.consumer)
            .replace("{file}", "app.js")
            .replace("{sink}", "k1")
            .replace("{source}", "k1")
            .replace(
                "{id}",
                if template.contains("/records/") {
                    "r1"
                } else {
                    &self.token_id
                },
            )
    }

    fn query(&self, route: &Route) -> String {
        match route.path {
            "/v1/updated" => format!("?collections={}", self.collection),
            "/v1/metrics" => "?set=active-basins".into(),
            p if p.starts_with("/v1/metrics/") => "?set=storage".into(),
            _ => String::new(),
        }
    }

    fn body(&self, route: &Route, caller: &str) -> Option<Value> {
        Some(match (route.method, route.path) {
            ("POST", "/v1/basins") => json!({ "basin": format!("{}-new", self.basin) }),
            ("POST", "/v1/streams") => json!({ "stream": "s-new" }),
            ("POST", "/v1/streams/{stream}/records") => json!({ "records": [{ "body": "x" }] }),
            ("POST", "/v1/access-tokens") => scoped_token(
                &format!("child-{caller}"),
                json!({ "ops": ["read"], "basins": { "prefix": "alpha" } }),
            ),
            ("PUT", "/v1/consumers/{consumer}") => json!({ "source": { "stream": self.stream } }),
            ("POST", "/v1/consumers/{consumer}/replay") => json!({ "dead_letters": [0] }),
            ("PUT", "/v1/sinks/{sink}") => json!({
                "source": { "stream": self.stream },
                "destination": { "webhook": { "url": "http://127.0.0.1:9/never" } }
            }),
            ("PUT", "/v1/sources/{source}") => json!({ "http": {
                "url": "http://127.0.0.1:9/never", "collection": self.collection
            }}),
            ("PUT", "/v1/collections/{collection}/records/{id}") => json!({ "data": { "a": 1 } }),
            ("PATCH", _) => json!({}),
            _ => return None,
        })
    }
}

async fn send(
    server: &TestServer,
    caller: &Caller,
    route: &Route,
    names: &Names,
) -> (StatusCode, Option<String>, Value) {
    let url = format!("{}{}", names.path(route.path), names.query(route));
    let method = Method::from_bytes(route.method.as_bytes()).unwrap();
    let mut req = server.bare(method, &url).header("s2-basin", &names.basin);
    if let Some(auth) = &caller.authorization {
        req = req.header("authorization", auth);
    }
    if let Some(body) = names.body(route, caller.name) {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, challenge, body)
}

/// Creates what a run acts on, as root: the basin, a stream, a
/// collection, a consumer and an access token to revoke.
async fn fixture(server: &TestServer, names: &Names) {
    let root = |method: Method, path: &str| {
        server
            .bare(method, path)
            .bearer_auth(ROOT)
            .header("s2-basin", &names.basin)
    };
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/v1/basins/{}", names.basin),
            json!({}),
        ),
        (
            Method::PUT,
            format!("/v1/streams/{}", names.stream),
            json!({}),
        ),
        (
            Method::PUT,
            format!("/v1/collections/{}", names.collection),
            json!({}),
        ),
        (
            Method::PUT,
            format!("/v1/consumers/{}", names.consumer),
            json!({ "source": { "stream": names.stream } }),
        ),
    ] {
        let resp = root(method, &path).json(&body).send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "fixture {path}: {}",
            resp.status()
        );
    }
    issue(
        server,
        scoped_token(&names.token_id, json!({ "ops": ["read"] })),
    )
    .await;
}

/// Every (method, path) the router answers with something other than 405.
async fn routes_of_the_router(server: &TestServer) -> BTreeSet<(String, String)> {
    let names = Names::existing("discovery");
    fixture(server, &names).await;
    let mut found = BTreeSet::new();
    let paths: BTreeSet<String> = rill::api::routes().into_iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let resp = server
                .bare(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &names.path(&path),
                )
                .bearer_auth(ROOT)
                .header("s2-basin", &names.basin)
                .send()
                .await
                .unwrap();
            if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
                found.insert((method.to_string(), path.clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn every_route_answers_every_caller_as_its_scope_says() {
    let server = TestServer::start_with_root_token(ROOT).await;

    // The table covers exactly the router's routes, as it lists them and
    // as they answer.
    let router = routes_of_the_router(&server).await;
    let listed: BTreeSet<(String, String)> = rill::api::routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect();
    assert_eq!(
        listed, router,
        "the routes the router lists are the ones it answers"
    );
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let untested: Vec<_> = router.difference(&table).collect();
    assert!(
        untested.is_empty(),
        "routes missing from ROUTES: {untested:?}"
    );
    let gone: Vec<_> = table.difference(&router).collect();
    assert!(
        gone.is_empty(),
        "ROUTES lists what the router lacks: {gone:?}"
    );

    let all = |ops| Grant::Scoped {
        ops,
        basin_prefix: Some(""),
        all_streams: true,
        all_token_ids: true,
    };
    let expired = issue(
        &server,
        json!({
            "id": "expired",
            "scope": { "ops": ALL_OPS, "basins": { "prefix": "" }, "streams": { "prefix": "" } },
            "expires_at": humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(2)).to_string(),
        }),
    )
    .await;
    let revoked = issue(&server, scoped_token("revoked", json!({ "ops": ALL_OPS }))).await;
    server
        .bare(Method::DELETE, "/v1/access-tokens/revoked")
        .bearer_auth(ROOT)
        .expect_status(StatusCode::NO_CONTENT)
        .await;
    let groups = json!({
        "account": { "read": true, "write": true },
        "basin": { "read": true, "write": true },
        "stream": { "read": true, "write": true },
    });
    let mut callers = vec![
        Caller {
            name: "none",
            authorization: None,
            grant: Grant::Nothing,
        },
        Caller {
            name: "random",
            authorization: Some(format!("Bearer rill_{}", "x".repeat(43))),
            grant: Grant::Nothing,
        },
        Caller {
            name: "malformed",
            authorization: Some(format!("Basic {ROOT}")),
            grant: Grant::Nothing,
        },
        Caller {
            name: "revoked",
            authorization: Some(format!("Bearer {revoked}")),
            grant: Grant::Nothing,
        },
        Caller {
            name: "root",
            authorization: Some(format!("Bearer {ROOT}")),
            grant: Grant::Everything,
        },
    ];
    let scoped: Vec<(&str, Value, Grant)> = vec![
        (
            "in-scope",
            json!({ "basins": { "prefix": "alpha" }, "streams": { "prefix": "" },
                    "access_tokens": { "prefix": "" }, "op_groups": groups }),
            Grant::Scoped {
                ops: ALL_OPS,
                basin_prefix: Some("alpha"),
                all_streams: true,
                all_token_ids: true,
            },
        ),
        (
            "other-basin",
            json!({ "basins": { "exact": "beta" }, "streams": { "prefix": "" },
                    "access_tokens": { "prefix": "" }, "op_groups": groups }),
            Grant::Scoped {
                ops: ALL_OPS,
                basin_prefix: None,
                all_streams: true,
                all_token_ids: true,
            },
        ),
        (
            "other-streams",
            json!({ "basins": { "prefix": "" }, "streams": { "prefix": "zzz" },
                    "access_tokens": { "prefix": "" }, "op_groups": groups }),
            Grant::Scoped {
                ops: ALL_OPS,
                basin_prefix: Some(""),
                all_streams: false,
                all_token_ids: true,
            },
        ),
        (
            "other-token-ids",
            json!({ "basins": { "prefix": "" }, "streams": { "prefix": "" },
                    "access_tokens": { "prefix": "zzz" }, "op_groups": groups }),
            Grant::Scoped {
                ops: ALL_OPS,
                basin_prefix: Some(""),
                all_streams: true,
                all_token_ids: false,
            },
        ),
        (
            "read-op",
            json!({ "basins": { "prefix": "" }, "streams": { "prefix": "" },
                    "access_tokens": { "prefix": "" }, "ops": ["read"] }),
            all(&["read"]),
        ),
        (
            "stream-read-group",
            json!({ "basins": { "prefix": "" }, "streams": { "prefix": "" },
                    "access_tokens": { "prefix": "" }, "op_groups": { "stream": { "read": true } } }),
            all(STREAM_READ_GROUP),
        ),
    ];
    for (name, scope, grant) in scoped {
        let secret = issue(&server, scoped_token(name, scope)).await;
        callers.push(Caller {
            name,
            authorization: Some(format!("Bearer {secret}")),
            grant,
        });
    }
    // By now the short-lived token has run out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    callers.push(Caller {
        name: "expired",
        authorization: Some(format!("Bearer {expired}")),
        grant: Grant::Nothing,
    });

    let mut checked = 0;
    for caller in &callers {
        let names = Names::existing(caller.name);
        fixture(&server, &names).await;
        for route in ROUTES {
            let allowed = caller.allows(route, &names.basin);
            let (status, challenge, body) = send(&server, caller, route, &names).await;
            let at = format!(
                "{} {} {} → {status} {body}",
                caller.name, route.method, route.path
            );
            checked += 1;
            match (&caller.grant, allowed) {
                (_, true) => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "allowed, yet refused: {at}"
                ),
                (Grant::Nothing, false) => {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{at}");
                    assert_eq!(body["code"], "unauthenticated", "{at}");
                    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{at}");
                }
                (_, false) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{at}");
                    assert_eq!(body["code"], "permission_denied", "{at}");
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let message = body["message"].as_str().unwrap_or_default();
                for name in names.all() {
                    assert!(!message.contains(name), "the refusal names `{name}`: {at}");
                }
            }
            // Whether the resource exists makes no difference to a refusal
            // (but a consumer's existence shows to a token allowed its
            // basin: its source is found through it).
            let decided_by_names =
                !route.via_consumer || caller.refuses_before_lookup(route, &names.basin);
            if !allowed && decided_by_names {
                let missing = Names::missing();
                let (again, _, body) = send(&server, caller, route, &missing).await;
                assert_eq!(again, status, "{at}; for missing resources: {again} {body}");
                checked += 1;
            }
        }
    }
    eprintln!("{checked} requests checked for {} callers", callers.len());
    let health = server
        .bare(Method::GET, "/health")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(health["auth"], true);
}
