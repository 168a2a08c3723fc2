//! Whole requests through the router, as a client can send them: any
//! route, its path segments, query, `s2-basin` header, content type and
//! body chosen by the fuzzer, against an in-memory server that holds a
//! basin, a stream, a collection and a consumer (put back every 500
//! inputs, so a crash may depend on the inputs before it: replay the
//! artifact after the corpus if it does not reproduce alone). Every
//! request must get an answer that is not a server error: bad input is the
//! client's (4xx).
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rill::engine::Engine;
use rill::storage::MemoryStorage;
use tower::ServiceExt;

const BASIN: &str = "fuzz-basin";
/// Names that exist on the server (so that requests reach past lookups).
const NAMES: [&str; 6] = [BASIN, "s", "c", "q", "tok", "_events/c"];
const QUERY_KEYS: [&str; 16] = [
    "seq_num",
    "count",
    "bytes",
    "wait",
    "clamp",
    "timestamp",
    "tail_offset",
    "until",
    "updated_after",
    "after_id",
    "limit",
    "cursor",
    "start_after",
    "prefix",
    "event",
    "start",
];
const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/protobuf",
    "s2s/proto",
    "text/event-stream",
    "",
];
/// A request left waiting this long (a long poll, a session) answered in
/// time: it is dropped.
const PATIENCE: Duration = Duration::from_millis(50);

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Raw(String),
}

impl Text {
    fn get<'a>(&'a self, known: &[&'a str]) -> &'a str {
        match self {
            Text::Known(i) => known[*i as usize % known.len()],
            Text::Raw(text) => text,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    route: u8,
    segments: Vec<Text>,
    query: Vec<(Text, Text)>,
    basin: Option<Text>,
    content_type: u8,
    body: Vec<u8>,
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    routes: Vec<(Method, String)>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let engine = Engine::open(Arc::new(MemoryStorage::default())).expect("an engine");
        let router = rill::api::router(engine, rill::api::ApiConfig::default());
        let server = Server {
            runtime,
            router,
            routes: rill::api::routes(),
        };
        server.set_up();
        server
    })
}

impl Server {
    /// Makes sure the basin, stream, collection and consumer exist.
    fn set_up(&self) {
        for (method, path, body) in [
            ("PUT", format!("/v1/basins/{BASIN}"), "{}"),
            ("PUT", "/v1/streams/s".into(), "{}"),
            (
                "POST",
                "/v1/streams/s/records".into(),
                r#"{"records":[{"body":"x"}]}"#,
            ),
            ("PUT", "/v1/collections/c".into(), "{}"),
            (
                "PUT",
                "/v1/consumers/q".into(),
                r#"{"source":{"stream":"s"}}"#,
            ),
        ] {
            let status = self.send(
                method.parse().unwrap(),
                &path,
                Some(BASIN),
                "application/json",
                body.as_bytes().to_vec(),
            );
            // A consumer whose stream was deleted and made anew conflicts:
            // it is the stream that matters.
            assert!(
                status.is_some_and(|s| s < 300 || s == 409),
                "setting up {path}: {status:?}"
            );
        }
    }

    /// The status the router answers with, or `None` if it took longer
    /// than [`PATIENCE`].
    fn send(
        &self,
        method: Method,
        uri: &str,
        basin: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Option<u16> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(basin) = basin {
            request = request.header("s2-basin", basin);
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        // A header value the http crate refuses never reaches a server.
        let request = request.body(Body::from(body)).ok()?;
        self.runtime.block_on(async {
            let response =
                tokio::time::timeout(PATIENCE, self.router.clone().oneshot(request)).await;
            match response {
                Ok(Ok(response)) => Some(response.status().as_u16()),
                Ok(Err(never)) => match never {},
                Err(_) => None,
            }
        })
    }
}

fuzz_target!(|input: Input| {
    let server = server();
    // An input may delete what the others aim at: put it back now and
    // then (these are idempotent ensures).
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 500 == 499 {
        server.set_up();
    }
    let (method, template) = &server.routes[input.route as usize % server.routes.len()];
    // Fill each `{name}` (or `{*name}`) of the template in turn.
    let mut path = String::new();
    let mut segments = input.segments.iter();
    for part in template.split('/').skip(1) {
        path.push('/');
        if part.starts_with('{') {
            let value = segments.next().map_or("s", |t| t.get(&NAMES));
            path.push_str(&percent_encode(value));
        } else {
            path.push_str(part);
        }
    }
    let query: Vec<String> = input
        .query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k.get(&QUERY_KEYS)),
                percent_encode(v.get(&["0", "1", "true", "10"]))
            )
        })
        .collect();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let basin = input.basin.as_ref().map(|b| b.get(&NAMES));
    let content_type = CONTENT_TYPES[input.content_type as usize % CONTENT_TYPES.len()];
    if let Some(status) = server.send(method.clone(), &path, basin, content_type, input.body) {
        assert!(status < 500, "{method} {path} answered {status}");
    }
});
