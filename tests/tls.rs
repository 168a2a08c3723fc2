//! TLS on the serving port, against a CA made here: unary requests, SSE
//! and S2S sessions over HTTP/2 (by ALPN) and HTTP/1.1, plain HTTP
//! refused with a 400 that says why, and a certificate replaced on disk
//! taken up without dropping the connections already open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rill::engine::Engine;
use rill::server::ServerOptions;
use rill::storage::MemoryStorage;
use rill::tls::{Tls, TlsFiles};
use rill_client::{Client, ReadStart};

mod common;
use common::pki::make_pki;

/// A TLS server on 127.0.0.1; returns its https base URL.
async fn start(files: TlsFiles) -> (String, tokio::sync::oneshot::Sender<()>) {
    let engine = Engine::open(Arc::new(MemoryStorage::default())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = ServerOptions {
        tls: Some(Tls::load(files).expect("the certificate loads")),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(rill::server::run_with(
        listener,
        engine,
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    (format!("https://127.0.0.1:{port}"), stop)
}

fn http_client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_requests_and_sessions_run_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let (base, _stop) = start(pki.files.clone()).await;

    let client = Client::with_root_certificates(&base, pki.ca_pem.as_bytes())
        .unwrap()
        .with_basin("tls-basin");
    client.ensure_basin("tls-basin").await.unwrap();
    client.ensure_stream("s").await.unwrap();
    client.append("s", &["one", "two"]).await.unwrap();
    let read = client.read("s", 0, 10).await.unwrap();
    let bodies: Vec<_> = read.iter().map(|r| r.body_text().into_owned()).collect();
    assert_eq!(bodies, ["one", "two"]);

    // S2S: an append session and a read session (follow).
    let session = client.append_session("s").await.unwrap();
    let ticket = session
        .submit(
            vec![rill_client::AppendRecord::new("three")],
            Default::default(),
        )
        .await
        .unwrap();
    let ack = ticket.await.unwrap();
    assert_eq!(ack.start, 2);
    session.close().await.unwrap();
    let mut follow = client.follow("s", ReadStart::SeqNum(0));
    for expected in ["one", "two", "three"] {
        let record = tokio::time::timeout(Duration::from_secs(5), follow.next())
            .await
            .expect("a record in time")
            .unwrap();
        assert_eq!(record.body_text(), expected);
    }

    // SSE, on HTTP/2 (by ALPN) and on HTTP/1.1.
    for http1_only in [false, true] {
        let http = http_client(&pki.ca_pem, http1_only);
        let resp = http
            .get(format!("{base}/v1/streams/s/records?seq_num=0&count=3"))
            .header("s2-basin", "tls-basin")
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let version = if http1_only {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(resp.version(), version);
        let mut body = resp.bytes_stream();
        let mut text = String::new();
        while !text.contains("event: batch") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .expect("SSE data in time")
                .expect("the stream goes on")
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("three"), "{text}");
    }
}

#[tokio::test]
async fn plain_http_and_untrusted_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let (base, _stop) = start(pki.files.clone()).await;
    let plain = base.replace("https://", "http://");
    let resp = reqwest::get(format!("{plain}/health")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "tls_required");

    // A client that does not trust the CA does not get through.
    let stranger = reqwest::Client::new();
    assert!(stranger.get(format!("{base}/health")).send().await.is_err());
    // One that does, does.
    let health = http_client(&pki.ca_pem, false)
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Waits until a client trusting only `ca_pem` gets through.
async fn trusted_within(base: &str, ca_pem: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        // A new client each time: a new connection, a new handshake.
        let ok = http_client(ca_pem, false)
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_taken_up_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_pki(dir.path(), "old");
    let (base, _stop) = start(old.files.clone()).await;
    let old_client = http_client(&old.ca_pem, false);
    old_client
        .put(format!("{base}/v1/basins/tls-reload"))
        .send()
        .await
        .unwrap();
    old_client
        .put(format!("{base}/v1/streams/s"))
        .header("s2-basin", "tls-reload")
        .send()
        .await
        .unwrap();
    // A live session on a connection made with the old certificate.
    let live = old_client
        .get(format!("{base}/v1/streams/s/records?seq_num=0"))
        .header("s2-basin", "tls-reload")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut live = live.bytes_stream();

    // A broken file is not taken up: the old certificate stays.
    std::fs::write(&old.files.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(trusted_within(&base, &old.ca_pem, Duration::from_secs(1)).await);

    // A new certificate from another CA, written over the old files.
    let new = make_pki(dir.path(), "new");
    std::fs::copy(&new.files.key, &old.files.key).unwrap();
    std::fs::copy(&new.files.cert, &old.files.cert).unwrap();
    assert!(
        trusted_within(&base, &new.ca_pem, Duration::from_secs(10)).await,
        "the new certificate was not taken up"
    );
    assert!(!trusted_within(&base, &old.ca_pem, Duration::from_millis(100)).await);

    // The session opened before still gets what is appended now.
    http_client(&new.ca_pem, false)
        .post(format!("{base}/v1/streams/s/records"))
        .header("s2-basin", "tls-reload")
        .json(&serde_json::json!({ "records": [{ "body": "after-reload" }] }))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("after-reload") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("the old session still delivers")
            .expect("the old session is still open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// The `rill` binary serving TLS on a free loopback port; killed on drop.
struct Binary {
    child: std::process::Child,
    base: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_binary(files: &TlsFiles) -> Binary {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rill"))
        .args([
            "serve",
            "--in-memory",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Binary {
        child,
        base: format!("https://127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_pki(dir.path(), "old");
    let server = serve_binary(&old.files);
    assert!(
        trusted_within(&server.base, &old.ca_pem, Duration::from_secs(20)).await,
        "the server did not come up"
    );
    // New files with the old modification times: only SIGHUP can tell.
    let times = |path: &std::path::Path| std::fs::metadata(path).unwrap().modified().unwrap();
    let (cert_time, key_time) = (times(&old.files.cert), times(&old.files.key));
    let new = make_pki(dir.path(), "new");
    std::fs::copy(&new.files.key, &old.files.key).unwrap();
    std::fs::copy(&new.files.cert, &old.files.cert).unwrap();
    for (path, time) in [(&old.files.cert, cert_time), (&old.files.key, key_time)] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        trusted_within(&server.base, &old.ca_pem, Duration::from_secs(1)).await,
        "reloaded without a signal"
    );
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        trusted_within(&server.base, &new.ca_pem, Duration::from_secs(5)).await,
        "SIGHUP did not reload the certificate"
    );
}
