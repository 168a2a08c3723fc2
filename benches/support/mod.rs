//! What the benchmarks share: the fsync reference and latency formatting.
#![allow(dead_code)] // each bench uses a different subset

pub mod appends;

use std::io::Write;
use std::time::{Duration, Instant};

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The reference for durable writes: sequential writes of `bytes` to a
/// file on the same disk, each fdatasync'ed. Prints it and returns its p50.
pub fn fsync_reference(dir: &std::path::Path, bytes: usize) -> Duration {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = vec![b'x'; bytes];
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && samples.len() < 5000 {
        let start = Instant::now();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        samples.push(start.elapsed());
    }
    let _ = std::fs::remove_file(path);
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    println!(
        "reference: {bytes} B write + fdatasync      {:>9.0} ops/s            p50 {}  p99 {}",
        samples.len() as f64 / samples.iter().sum::<Duration>().as_secs_f64(),
        ms(p50),
        ms(percentile(&samples, 0.99)),
    );
    p50
}

/// A server over fjall in `dir`, with `basin` made, on a loopback port;
/// stopped by [`Served::stop`].
pub struct Served {
    pub engine: std::sync::Arc<rill::engine::Engine>,
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

pub async fn serve(dir: &std::path::Path, basin: &str) -> Served {
    use rill::engine::streams::config::BasinConfigPatch;
    use rill::engine::streams::names::BasinName;
    let storage = std::sync::Arc::new(rill::storage::FjallStorage::open(dir).unwrap());
    let engine = rill::engine::Engine::open(storage).unwrap();
    engine
        .streams()
        .ensure_basin(
            &BasinName::parse(basin).unwrap(),
            &BasinConfigPatch::default(),
        )
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rill::server::run(listener, engine.clone(), async {
        let _ = stopped.await;
    }));
    Served {
        engine,
        base,
        stop,
        task,
    }
}

impl Served {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
