//! What a scoped token sees and may do beyond yes/no per route: listings
//! narrowed to its scope, auto-prefixed stream names, tokens it may issue,
//! command records, sessions that end when it is revoked or expires, and
//! the other encodings (protobuf, SSE, S2S) refused like JSON.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ROOT: &str = "scopes-root-token-0123456789abcdefghijklmnop";

struct Auth {
    server: TestServer,
}

impl Auth {
    async fn start() -> Self {
        Self {
            server: TestServer::start_with_root_token(ROOT).await,
        }
    }

    fn as_(&self, token: &str, method: Method, path: &str, basin: &str) -> reqwest::RequestBuilder {
        self.server
            .bare(method, path)
            .bearer_auth(token)
            .header("s2-basin", basin)
    }

    fn root(&self, method: Method, path: &str, basin: &str) -> reqwest::RequestBuilder {
        self.as_(ROOT, method, path, basin)
    }

    async fn issue(&self, issuer: &str, info: Value) -> Result<String, (StatusCode, Value)> {
        let resp = self
            .as_(issuer, Method::POST, "/v1/access-tokens", "")
            .json(&info)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        if status == StatusCode::CREATED {
            Ok(body["access_token"].as_str().unwrap().to_string())
        } else {
            Err((status, body))
        }
    }

    async fn basin_with_streams(&self, basin: &str, streams: &[&str]) {
        self.root(Method::PUT, &format!("/v1/basins/{basin}"), basin)
            .send()
            .await
            .unwrap();
        for stream in streams {
            let path = format!("/v1/streams/{}", stream.replace('/', "%2F"));
            let resp = self.root(Method::PUT, &path, basin).send().await.unwrap();
            assert!(resp.status().is_success());
        }
    }
}

fn read_all() -> Value {
    json!({ "account": { "read": true }, "basin": { "read": true }, "stream": { "read": true } })
}

#[tokio::test]
async fn listings_show_only_what_the_scope_allows() {
    let auth = Auth::start().await;
    for basin in ["team-a-one", "team-a-two", "team-b-one"] {
        auth.basin_with_streams(basin, &["logs/1", "logs/2", "metrics/1"])
            .await;
    }
    for collection in ["orders", "users"] {
        auth.root(
            Method::PUT,
            &format!("/v1/collections/{collection}"),
            "team-a-one",
        )
        .send()
        .await
        .unwrap();
    }
    let token = auth
        .issue(
            ROOT,
            json!({ "id": "lister", "scope": {
                "basins": { "prefix": "team-a-" },
                "streams": { "prefix": "logs/" },
                "access_tokens": { "prefix": "list" },
                "op_groups": read_all() } }),
        )
        .await
        .unwrap();
    let list = |path: &str, basin: &str| {
        auth.as_(&token, Method::GET, path, basin)
            .expect_status(StatusCode::OK)
    };
    let basins = list("/v1/basins", "").await;
    assert_eq!(names(&basins, "basins"), ["team-a-one", "team-a-two"]);
    // A page of one still pages correctly within the scope.
    let first = list("/v1/basins?limit=1", "").await;
    assert_eq!(names(&first, "basins"), ["team-a-one"]);
    assert_eq!(first["has_more"], true);
    let second = list("/v1/basins?limit=1&start_after=team-a-one", "").await;
    assert_eq!(names(&second, "basins"), ["team-a-two"]);
    assert_eq!(second["has_more"], false);
    // A prefix outside the scope lists nothing rather than failing.
    assert_eq!(
        names(&list("/v1/basins?prefix=team-b", "").await, "basins"),
        Vec::<String>::new()
    );

    let streams = list("/v1/streams", "team-a-one").await;
    assert_eq!(names(&streams, "streams"), ["logs/1", "logs/2"]);
    let tokens = list("/v1/access-tokens", "").await;
    let ids: Vec<&str> = tokens["access_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lister"]);
    // Collections are seen through their events streams.
    assert_eq!(
        names(&list("/v1/collections", "team-a-one").await, "collections"),
        Vec::<String>::new()
    );
    let one = auth
        .issue(
            ROOT,
            json!({ "id": "orders-reader", "scope": {
                "basins": { "exact": "team-a-one" },
                "streams": { "prefix": "_collections/orders/" },
                "op_groups": read_all() } }),
        )
        .await
        .unwrap();
    let collections = auth
        .as_(&one, Method::GET, "/v1/collections", "team-a-one")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(names(&collections, "collections"), ["orders"]);
    assert_eq!(collections["has_more"], false);
    // The account's active basins are filtered too.
    let active = auth
        .as_(&token, Method::GET, "/v1/metrics?set=active-basins", "")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(
        active["values"][0]["label"]["values"],
        json!(["team-a-one", "team-a-two"])
    );
}

#[tokio::test]
async fn auto_prefixed_tokens_see_streams_relative_to_their_prefix() {
    let auth = Auth::start().await;
    auth.basin_with_streams("shared-basin", &["tenant-a/old", "tenant-b/secret"])
        .await;
    let token = auth
        .issue(
            ROOT,
            json!({ "id": "tenant-a", "auto_prefix_streams": true, "scope": {
                "basins": { "exact": "shared-basin" },
                "streams": { "prefix": "tenant-a/" },
                "op_groups": { "basin": { "read": true }, "stream": { "read": true, "write": true } } } }),
        )
        .await
        .unwrap();
    let call = |method: Method, path: &str| auth.as_(&token, method, path, "shared-basin");
    let created = call(Method::POST, "/v1/streams")
        .json(&json!({ "stream": "events" }))
        .expect_status(StatusCode::CREATED)
        .await;
    assert_eq!(created["name"], "events");
    call(Method::POST, "/v1/streams/events/records")
        .json(&json!({ "records": [{ "body": "hello" }] }))
        .expect_status(StatusCode::OK)
        .await;
    let listed = call(Method::GET, "/v1/streams")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(names(&listed, "streams"), ["events", "old"]);
    let read = call(Method::GET, "/v1/streams/events/records?seq_num=0")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(bodies(&read), ["hello"]);
    // The root sees where it really lives.
    let all = auth
        .root(Method::GET, "/v1/streams", "shared-basin")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(
        names(&all, "streams"),
        ["tenant-a/events", "tenant-a/old", "tenant-b/secret"]
    );
    // Metrics name streams the same way.
    auth.as_(
        &token,
        Method::GET,
        "/v1/metrics/shared-basin/old?set=storage",
        "",
    )
    .expect_status(StatusCode::OK)
    .await;
    auth.as_(
        &token,
        Method::GET,
        "/v1/metrics/shared-basin/nope?set=storage",
        "",
    )
    .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
    .await;
    // Another tenant's stream cannot be reached by climbing out.
    call(Method::GET, "/v1/streams/..%2Ftenant-b%2Fsecret/records")
        .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
        .await;
}

#[tokio::test]
async fn a_token_issues_only_tokens_within_itself() {
    let auth = Auth::start().await;
    let in_hour = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600))
        .to_string();
    let parent = auth
        .issue(
            ROOT,
            json!({ "id": "team/parent", "expires_at": in_hour, "scope": {
                "basins": { "prefix": "team-" },
                "streams": { "prefix": "" },
                "access_tokens": { "prefix": "team/" },
                "ops": ["issue-access-token", "list-access-tokens", "read", "append"] } }),
        )
        .await
        .unwrap();
    let child = |id: &str, scope: Value| json!({ "id": id, "scope": scope });
    let narrower = json!({ "basins": { "prefix": "team-x" }, "ops": ["read"] });
    auth.issue(&parent, child("team/child", narrower.clone()))
        .await
        .expect("a narrower token is issued");
    // It inherited the parent's expiry.
    let listed = auth
        .as_(
            &parent,
            Method::GET,
            "/v1/access-tokens?prefix=team/child",
            "",
        )
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(listed["access_tokens"][0]["expires_at"], in_hour);

    let refusals = [
        child(
            "team/wider-op",
            json!({ "basins": { "prefix": "team-" }, "ops": ["delete-basin"] }),
        ),
        child(
            "team/wider-group",
            json!({ "basins": { "prefix": "team-" }, "op_groups": { "stream": { "write": true } } }),
        ),
        child(
            "team/wider-basins",
            json!({ "basins": { "prefix": "" }, "ops": ["read"] }),
        ),
        child(
            "team/wider-tokens",
            json!({ "access_tokens": { "prefix": "" }, "ops": ["read"] }),
        ),
        child("other/id", narrower.clone()),
        json!({ "id": "team/outlives", "expires_at": "2999-01-01T00:00:00Z", "scope": narrower }),
    ];
    for info in refusals {
        let (status, body) = auth.issue(&parent, info.clone()).await.unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN, "{info} → {body}");
        assert_eq!(body["code"], "permission_denied");
    }
}

#[tokio::test]
async fn command_records_need_their_own_operations() {
    let auth = Auth::start().await;
    auth.basin_with_streams("cmd-basin", &["s"]).await;
    let writer = auth
        .issue(
            ROOT,
            json!({ "id": "writer", "scope": {
                "basins": { "prefix": "" }, "streams": { "prefix": "" }, "ops": ["append"] } }),
        )
        .await
        .unwrap();
    let fence = json!({ "records": [{ "headers": [["", "fence"]], "body": "mine" }] });
    let trim = json!({ "records": [{ "headers": [["", "dHJpbQ=="]], "body": "AAAAAAAAAAE=" }] });
    for (name, body, format) in [("fence", fence, "raw"), ("trim", trim, "base64")] {
        let resp = auth
            .as_(&writer, Method::POST, "/v1/streams/s/records", "cmd-basin")
            .header("s2-format", format)
            .json(&body)
            .expect_error(StatusCode::FORBIDDEN, "permission_denied")
            .await;
        assert!(resp["message"].as_str().unwrap().contains(name));
        auth.root(Method::POST, "/v1/streams/s/records", "cmd-basin")
            .header("s2-format", format)
            .json(&body)
            .expect_status(StatusCode::OK)
            .await;
    }
}

#[tokio::test]
async fn every_encoding_is_refused_alike() {
    let auth = Auth::start().await;
    auth.basin_with_streams("enc-basin", &["s"]).await;
    let outsider = auth
        .issue(
            ROOT,
            json!({ "id": "outsider", "scope": {
                "basins": { "prefix": "" }, "streams": { "prefix": "other" },
                "op_groups": { "stream": { "read": true, "write": true } } } }),
        )
        .await
        .unwrap();
    let read = |accept: &str, content_type: Option<&str>| {
        let mut req = auth
            .as_(&outsider, Method::GET, "/v1/streams/s/records", "enc-basin")
            .header("accept", accept);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.expect_error(StatusCode::FORBIDDEN, "permission_denied")
    };
    read("application/json", None).await;
    read("application/protobuf", None).await;
    read("text/event-stream", None).await;
    read("s2s/proto", Some("s2s/proto")).await;
    auth.as_(
        &outsider,
        Method::POST,
        "/v1/streams/s/records",
        "enc-basin",
    )
    .header("content-type", "s2s/proto")
    .body(Vec::<u8>::new())
    .expect_error(StatusCode::FORBIDDEN, "permission_denied")
    .await;
    // No token at all: 401 with the challenge, on every encoding.
    let resp = auth
        .server
        .bare(Method::GET, "/v1/streams/s/records")
        .header("s2-basin", "enc-basin")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    // Health needs no token and says that auth is on.
    let health = auth
        .server
        .bare(Method::GET, "/health")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(health["auth"], true);
}

/// Reads SSE events until the session ends; returns the last one.
async fn last_event(mut sse: SseReader, within: Duration) -> (Option<SseEvent>, Duration) {
    let started = Instant::now();
    let mut last = None;
    loop {
        match tokio::time::timeout(within, sse.next()).await {
            Ok(Some(event)) => last = Some(event),
            Ok(None) => return (last, started.elapsed()),
            Err(_) => panic!("the session did not end within {within:?}"),
        }
    }
}

#[tokio::test]
async fn live_sessions_end_when_their_token_is_revoked_or_expires() {
    let auth = Auth::start().await;
    auth.basin_with_streams("live-basin", &["s"]).await;
    let scope = json!({ "basins": { "prefix": "" }, "streams": { "prefix": "" }, "ops": ["read"] });
    let revocable = auth
        .issue(ROOT, json!({ "id": "revocable", "scope": scope }))
        .await
        .unwrap();
    let open = |token: &str| {
        SseReader::open(
            auth.as_(
                token,
                Method::GET,
                "/v1/streams/s/records?seq_num=0",
                "live-basin",
            )
            .header("accept", "text/event-stream"),
        )
    };
    let sse = open(&revocable).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    auth.root(Method::DELETE, "/v1/access-tokens/revocable", "")
        .expect_status(StatusCode::NO_CONTENT)
        .await;
    let (last, took) = last_event(sse, Duration::from_secs(5)).await;
    let last = last.expect("an error event");
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["code"], "unauthenticated");
    assert!(took < Duration::from_secs(3), "ended after {took:?}");

    let soon =
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(2)).to_string();
    let expiring = auth
        .issue(
            ROOT,
            json!({ "id": "expiring", "expires_at": soon, "scope": scope }),
        )
        .await
        .unwrap();
    let sse = open(&expiring).await;
    let (last, _) = last_event(sse, Duration::from_secs(6)).await;
    assert_eq!(
        last.expect("an error event").json()["code"],
        "unauthenticated"
    );
    // A long poll waiting when its token is revoked ends too.
    let polling = auth
        .issue(ROOT, json!({ "id": "polling", "scope": scope }))
        .await
        .unwrap();
    let poll = auth
        .as_(
            &polling,
            Method::GET,
            "/v1/streams/s/records?tail_offset=0&wait=30",
            "live-basin",
        )
        .send();
    let poll = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked_at = Instant::now();
    auth.root(Method::DELETE, "/v1/access-tokens/polling", "")
        .expect_status(StatusCode::NO_CONTENT)
        .await;
    let resp = poll.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(revoked_at.elapsed() < Duration::from_secs(3));
    // And the token is refused from then on.
    auth.as_(
        &expiring,
        Method::GET,
        "/v1/streams/s/records",
        "live-basin",
    )
    .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated")
    .await;
}
