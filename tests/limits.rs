//! Limits of the machine that Rill adjusts to by itself, checked on the
//! real binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The soft and hard `Max open files` of a running process (Linux).
fn open_file_limits(pid: u32) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let parse = |n: Option<&str>| match n? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(numbers.next())?, parse(numbers.next())?))
}

#[test]
fn serve_raises_a_low_open_file_limit() {
    match open_file_limits(std::process::id()) {
        None => {
            eprintln!("no /proc here: nothing to check");
            return;
        }
        Some((_, hard)) if hard <= 256 => {
            eprintln!("the hard limit is {hard}: nothing to raise");
            return;
        }
        Some(_) => {}
    }
    // Start with a soft limit of 256, as a careful shell might.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && exec "$0" serve --listen 127.0.0.1:0 --in-memory"#)
        .arg(env!("CARGO_BIN_EXE_rill"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rill starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("rill is listening") {
                let _ = tx.send(());
            }
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    let limits = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server did not start");
    let (soft, hard) = limits.expect("the server's limits are readable");
    if hard <= 256 {
        eprintln!("the hard limit is {hard}: nothing to raise");
        return;
    }
    assert!(
        soft > 256,
        "the soft limit stayed at {soft} (hard limit {hard})"
    );
}

/// A server with `limits`, on a loopback port; stops when dropped.
struct LimitedServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl LimitedServer {
    async fn start(limits: rill::connections::ConnectionLimits) -> Self {
        let storage = std::sync::Arc::new(rill::storage::MemoryStorage::default());
        let engine = rill::engine::Engine::open(storage).expect("engine opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(rill::server::run_with(
            listener,
            engine,
            rill::server::ServerOptions {
                limits,
                ..Default::default()
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Asks the server to stop; true if it has stopped within `within`.
    async fn stop_within(mut self, within: Duration) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(within, task).await.is_ok()
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads until the server closes the connection (or `within` passes);
/// returns what it sent and whether it closed in time.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&received).into_owned(), closed)
}

#[tokio::test]
async fn a_slow_header_or_an_idle_connection_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let server = LimitedServer::start(rill::connections::ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 100,
        body_read_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;

    // Slow loris: a header trickling in a byte every 200 ms, for up to 6 s.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut cut_off = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"x").await.is_err() {
            cut_off = true;
            break;
        }
        let (_, closed) = read_until_closed(&mut slow, Duration::from_millis(1)).await;
        if closed {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a slow-loris header was still open after 6 s");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off only after {:?}",
        started.elapsed()
    );

    // Half an HTTP/2 preface, then nothing: the protocol is never told.
    let mut half = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"PRI * HT").await.unwrap();
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(4)).await;
    assert!(closed, "half an HTTP/2 preface held a connection for 4 s");

    // An idle connection that never sends a thing.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(4)).await;
    assert!(closed, "an idle connection was still open after 4 s");

    // A body that trickles in: the request is answered 408 once the body
    // timeout passes, however slowly bytes keep coming.
    let mut trickle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    trickle
        .write_all(
            b"POST /v1/basins HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answered = String::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = trickle.write_all(b" ").await;
        let (got, _) = read_until_closed(&mut trickle, Duration::from_millis(1)).await;
        answered.push_str(&got);
        if !answered.is_empty() {
            break;
        }
    }
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");
    assert!(answered.contains("request_timeout"), "{answered}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A prompt client is served as usual; kept alive and then idle, its
    // connection is closed like any idle one.
    let mut prompt = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    prompt
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (response, closed) = read_until_closed(&mut prompt, Duration::from_secs(4)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        closed,
        "an idle kept-alive connection was still open after 4 s"
    );
}

#[tokio::test]
async fn connections_over_the_limit_get_a_503_and_the_rest_are_served() {
    use tokio::io::AsyncWriteExt;
    let server = LimitedServer::start(rill::connections::ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 3,
        ..Default::default()
    })
    .await;
    // Three clients hold every slot (a request each, kept alive).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut tcp).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        held.push(tcp);
    }
    // The fourth is told to come back, and closed.
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (response, closed) = read_until_closed(&mut extra, Duration::from_secs(4)).await;
    assert!(closed, "a refused connection was left open");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("retry-after: 1"), "{response}");
    assert!(response.contains("\"code\":\"unavailable\""), "{response}");

    // One leaves; a new client gets its slot (within a few seconds).
    drop(held.pop());
    let mut served = false;
    for _ in 0..40 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let _ = tcp
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        let (response, _) = read_until_closed(&mut tcp, Duration::from_secs(2)).await;
        if response.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no slot came free after a client left");
}

/// Reads one small response (headers and a `content-length` body), for at
/// most 5 s.
async fn read_response(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&received).to_lowercase();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_silent_connection_does_not_hold_up_shutdown() {
    let server = LimitedServer::start(rill::connections::ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 100,
        ..Default::default()
    })
    .await;
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The drain waits up to 10 s for connections with work in flight; one
    // that never sent a byte has none.
    assert!(
        server.stop_within(Duration::from_secs(5)).await,
        "shutdown waited on a connection that never spoke"
    );
}

/// Whether a new client is served (not refused) within `within`.
async fn served_within(addr: std::net::SocketAddr, within: Duration) -> bool {
    use tokio::io::AsyncWriteExt;
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = tcp
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        let (response, _) = read_until_closed(&mut tcp, Duration::from_secs(2)).await;
        if response.starts_with("HTTP/1.1 200") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed() {
    let server = LimitedServer::start(rill::connections::ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 1,
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // An HTTP/2 client that keeps its connection (and answers pings).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(format!("http://{}/health", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    // While open it holds the only slot; idle for a second, it is closed.
    assert!(
        served_within(server.addr, Duration::from_secs(5)).await,
        "the idle HTTP/2 connection kept its slot"
    );
    drop(h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = LimitedServer::start(rill::connections::ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 1,
        write_stall_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // Enough records that a reader which never reads fills every buffer
    // between the server and itself (about 16 MB).
    // One kept-alive connection for the setup: the server serves one.
    let setup = reqwest::Client::builder().http1_only().build().unwrap();
    let base = format!("http://{}", server.addr);
    for path in ["/v1/basins/stall-basin", "/v1/streams/s"] {
        let resp = setup
            .put(format!("{base}{path}"))
            .header("s2-basin", "stall-basin")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let body = "x".repeat(1000);
    let records: Vec<_> = (0..1000)
        .map(|_| serde_json::json!({ "body": body }))
        .collect();
    // A kept-alive connection the server closes between two requests (on
    // a busy machine) fails the next one: it is tried again, bounded, and
    // any records it may have left only add to "enough".
    let mut appended = 0;
    let mut failures = 0;
    while appended < 16 {
        let sent = setup
            .post(format!("{base}/v1/streams/s/records"))
            .header("s2-basin", "stall-basin")
            .json(&serde_json::json!({ "records": records }))
            .send()
            .await;
        match sent {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                appended += 1;
            }
            Err(err) => {
                failures += 1;
                assert!(failures <= 5, "the setup's appends keep failing: {err}");
            }
        }
    }
    // The setup's connection is gone once a new client gets the slot.
    drop(setup);
    assert!(served_within(server.addr, Duration::from_secs(5)).await);
    // The probe's slot is released a moment after its connection closes:
    // until then a new connection is over the limit (503), so try again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let stalled = loop {
        let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stalled
            .write_all(
                b"GET /v1/streams/s/records?seq_num=0 HTTP/1.1\r\nhost: x\r\n\
                  s2-basin: stall-basin\r\naccept: text/event-stream\r\n\r\n",
            )
            .await
            .unwrap();
        // Served (its first bytes say so); from then on it reads nothing,
        // holding the only slot, until it is cut off.
        let mut first = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut first))
            .await
            .expect("the session starts")
            .unwrap();
        if first[..n].starts_with(b"HTTP/1.1 200") {
            break stalled;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&first[..n])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut refused = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _ = refused
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (response, _) = read_until_closed(&mut refused, Duration::from_secs(2)).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        served_within(server.addr, Duration::from_secs(6)).await,
        "a client that reads nothing kept its connection"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused_by_the_flags() {
    let server = LimitedServer::start(rill::connections::ConnectionLimits {
        max_header_bytes: 8192,
        max_headers: 10,
        max_body_bytes: 65536,
        ..Default::default()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/basins", server.addr);
    let mut many = client.get(&url);
    for i in 0..11 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);
    let big = client.get(&url).header("x-big", "y".repeat(10_000));
    assert_eq!(big.send().await.unwrap().status(), 431);
    // Within the limits, served.
    let fine = client.get(&url).header("x-small", "y".repeat(1000));
    assert_eq!(fine.send().await.unwrap().status(), 200);
    let body = serde_json::json!({ "basin": "x".repeat(70_000) });
    let resp = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let error: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(error["code"], "payload_too_large");
}
