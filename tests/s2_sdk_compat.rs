//! The official Rust SDK (`s2-sdk`, pinned) against Rill: admin operations,
//! pipelined append sessions, live read sessions that resume across a
//! server restart, and fencing / `match_seq_num` races between writers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rill::engine::Engine;
use rill::storage::FjallStorage;
use s2_sdk::append_session::AppendSessionConfig;
use s2_sdk::read_session::ReadSession;
use s2_sdk::types::{
    AppendInput, AppendRecord, AppendRecordBatch, BasinName, CommandRecord, CreateBasinInput,
    CreateStreamInput, FencingToken, ListStreamsInput, ReadFrom, ReadInput, ReadLimits,
    ReadSessionConfig, ReadStart, ReadStop, S2Config, S2Endpoints, StreamName,
};
use s2_sdk::S2;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const BASIN: &str = "sdk-basin";

/// A Rill server on a fixed loopback address that can be stopped and
/// started again on the same data.
struct Server {
    addr: std::net::SocketAddr,
    /// Kept open across restarts, so no other test can take the port.
    socket: std::net::TcpListener,
    dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start() -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let mut server = Self {
            addr,
            socket,
            dir,
            stop: None,
            task: None,
        };
        server.run_on_socket();
        server
    }

    fn run_on_socket(&mut self) {
        let listener = TcpListener::from_std(self.socket.try_clone().unwrap()).unwrap();
        let storage = Arc::new(FjallStorage::open(self.dir.path()).unwrap());
        let engine = Engine::open(storage).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            rill::server::run(listener, engine, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        }));
    }

    async fn restart(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        self.run_on_socket();
    }

    fn client(&self) -> S2 {
        let endpoint = format!("http://{}", self.addr);
        let config = S2Config::new("dummy-token")
            .with_endpoints(S2Endpoints::for_endpoint(&endpoint).unwrap())
            .with_request_timeout(Duration::from_secs(10));
        S2::new(config).unwrap()
    }
}

fn batch(bodies: &[String]) -> AppendRecordBatch {
    AppendRecordBatch::try_from_iter(bodies.iter().map(|b| AppendRecord::new(b.clone()).unwrap()))
        .unwrap()
}

async fn setup(s2: &S2, stream: &str) -> s2_sdk::S2Stream {
    let basin_name: BasinName = BASIN.parse().unwrap();
    if s2.get_basin_config(basin_name.clone()).await.is_err() {
        s2.create_basin(CreateBasinInput::new(basin_name.clone()))
            .await
            .unwrap();
    }
    let basin = s2.basin(basin_name);
    let stream_name: StreamName = stream.parse().unwrap();
    basin
        .create_stream(CreateStreamInput::new(stream_name.clone()))
        .await
        .unwrap();
    basin.stream(stream_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations() {
    let server = Server::start().await;
    let s2 = server.client();
    let stream = setup(&s2, "admin").await;
    let basin = s2.basin(BASIN.parse().unwrap());
    let page = basin.list_streams(ListStreamsInput::new()).await.unwrap();
    assert_eq!(page.values.len(), 1);
    assert_eq!(page.values[0].name.to_string(), "admin");
    let config = basin
        .get_stream_config("admin".parse().unwrap())
        .await
        .unwrap();
    assert!(config.retention_policy.is_some());
    assert_eq!(stream.check_tail().await.unwrap().seq_num, 0);
    let basins = s2.list_basins(Default::default()).await.unwrap();
    assert_eq!(basins.values[0].name.to_string(), BASIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_append_session_acks_in_order() {
    let server = Server::start().await;
    let s2 = server.client();
    let stream = setup(&s2, "pipelined").await;
    let session = stream.append_session(AppendSessionConfig::new());
    let mut tickets = Vec::new();
    for i in 0..200 {
        let bodies: Vec<String> = (0..5).map(|j| format!("r{i}-{j}")).collect();
        tickets.push(
            session
                .submit(AppendInput::new(batch(&bodies)))
                .await
                .unwrap(),
        );
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        let ack = ticket.await.unwrap();
        assert_eq!(ack.start.seq_num, 5 * i as u64);
        assert_eq!(ack.end.seq_num, 5 * i as u64 + 5);
    }
    session.close().await.unwrap();
    assert_eq!(stream.check_tail().await.unwrap().seq_num, 1000);
    let read = stream
        .read(ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(998))))
        .await
        .unwrap();
    let bodies: Vec<_> = read
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies, ["r199-3", "r199-4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_session_follows_live_and_resumes_across_a_restart() {
    let mut server = Server::start().await;
    let s2 = server.client();
    let stream = setup(&s2, "live").await;
    stream
        .append(AppendInput::new(batch(&["before".into()])))
        .await
        .unwrap();

    let mut session = stream
        .read_session(
            ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0))),
            ReadSessionConfig::new(),
        )
        .await
        .unwrap();
    let mut seen: Vec<(u64, String)> = Vec::new();
    let next_batch = async |session: &mut ReadSession| loop {
        let batch = tokio::time::timeout(Duration::from_secs(20), session.next())
            .await
            .expect("a batch in time")
            .expect("session open")
            .expect("no session error");
        if !batch.records.is_empty() {
            return batch;
        }
    };
    let first = next_batch(&mut session).await;
    seen.extend(
        first
            .records
            .iter()
            .map(|r| (r.seq_num, String::from_utf8_lossy(&r.body).into_owned())),
    );

    stream
        .append(AppendInput::new(batch(&["live-1".into()])))
        .await
        .unwrap();
    let live = next_batch(&mut session).await;
    seen.extend(
        live.records
            .iter()
            .map(|r| (r.seq_num, String::from_utf8_lossy(&r.body).into_owned())),
    );

    // The server restarts under the session; the SDK reconnects and resumes
    // after the last record it saw: nothing missed, nothing repeated.
    server.restart().await;
    let writer = server.client();
    let stream_again = writer
        .basin(BASIN.parse().unwrap())
        .stream("live".parse().unwrap());
    stream_again
        .append(AppendInput::new(batch(&["after-restart".into()])))
        .await
        .unwrap();
    while seen.len() < 3 {
        let batch = next_batch(&mut session).await;
        seen.extend(
            batch
                .records
                .iter()
                .map(|r| (r.seq_num, String::from_utf8_lossy(&r.body).into_owned())),
        );
    }
    assert_eq!(
        seen,
        vec![
            (0, "before".to_string()),
            (1, "live-1".to_string()),
            (2, "after-restart".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_seq_num_race_has_one_winner_per_position() {
    let server = Server::start().await;
    let s2 = server.client();
    setup(&s2, "race").await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let stream = server
                .client()
                .basin(BASIN.parse().unwrap())
                .stream("race".parse().unwrap());
            tokio::spawn(async move {
                let mut won = Vec::new();
                for attempt in 0..40 {
                    let tail = stream.check_tail().await.unwrap().seq_num;
                    let input = AppendInput::new(batch(&[format!("w{w}-{attempt}")]))
                        .with_match_seq_num(tail);
                    match stream.append(input).await {
                        Ok(ack) => {
                            assert_eq!(ack.start.seq_num, tail);
                            won.push(tail);
                        }
                        Err(s2_sdk::error::AppendError::ConditionFailed(
                            s2_sdk::error::AppendConditionFailed::SeqNumMismatch(next),
                        )) => assert!(next > tail),
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut positions = Vec::new();
    for writer in writers {
        positions.extend(writer.await.unwrap());
    }
    positions.sort();
    let tail = s2
        .basin(BASIN.parse().unwrap())
        .stream("race".parse().unwrap())
        .check_tail()
        .await
        .unwrap();
    // Every position was won exactly once: no duplicates, no gaps.
    assert_eq!(positions, (0..tail.seq_num).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_keeps_out_the_old_writer() {
    let server = Server::start().await;
    let s2 = server.client();
    let stream = setup(&s2, "fenced").await;
    let old: FencingToken = "old-writer".parse().unwrap();
    let new: FencingToken = "new-writer".parse().unwrap();
    let fence = |token: FencingToken| {
        AppendInput::new(
            AppendRecordBatch::try_from_iter([CommandRecord::fence(token).into()]).unwrap(),
        )
    };
    stream.append(fence(old.clone())).await.unwrap();
    stream
        .append(AppendInput::new(batch(&["from-old".into()])).with_fencing_token(old.clone()))
        .await
        .unwrap();
    // A new writer takes over.
    stream
        .append(fence(new.clone()).with_fencing_token(old.clone()))
        .await
        .unwrap();
    match stream
        .append(AppendInput::new(batch(&["stale".into()])).with_fencing_token(old.clone()))
        .await
    {
        Err(s2_sdk::error::AppendError::ConditionFailed(
            s2_sdk::error::AppendConditionFailed::FencingTokenMismatch(current),
        )) => assert_eq!(current, new),
        other => panic!("the old writer should be fenced out, got {other:?}"),
    }
    stream
        .append(AppendInput::new(batch(&["from-new".into()])).with_fencing_token(new))
        .await
        .unwrap();
    let read = stream
        .read(
            ReadInput::new()
                .with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0)))
                .with_stop(ReadStop::new().with_limits(ReadLimits::new().with_count(10)))
                .with_ignore_command_records(true),
        )
        .await
        .unwrap();
    let bodies: Vec<_> = read
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies, ["from-old", "from-new"]);
}

/// A scoped token, issued and used through the SDK, gets what S2 would
/// give it: reads in scope, and S2's `403` with `permission_denied`
/// for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_issued_and_used_through_the_sdk() {
    use s2_sdk::types::{
        AccessTokenScopeInput, BasinMatcher, IssueAccessTokenInput, OperationGroupPermissions,
        ReadWritePermissions, StreamMatcher,
    };
    const ROOT: &str = "sdk-root-token-0123456789abcdefghijklmnopq";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let engine = Engine::open(Arc::new(rill::storage::MemoryStorage::default())).unwrap();
    let options = rill::server::ServerOptions {
        auth: rill::api::Auth::with_root_token(ROOT),
        ..Default::default()
    };
    tokio::spawn(rill::server::run_with(
        listener,
        engine,
        options,
        std::future::pending(),
    ));
    let client = |token: &str| {
        let config = S2Config::new(token)
            .with_endpoints(S2Endpoints::for_endpoint(&endpoint).unwrap())
            .with_request_timeout(Duration::from_secs(10));
        S2::new(config).unwrap()
    };
    let root = client(ROOT);
    let feed = setup(&root, "feeds-a").await;
    let private = setup(&root, "private").await;
    feed.append(AppendInput::new(batch(&["hello".into()])))
        .await
        .unwrap();

    let scope = AccessTokenScopeInput::from_op_group_perms(
        OperationGroupPermissions::new().with_stream(ReadWritePermissions::read_only()),
    )
    .with_basins(BasinMatcher::Exact(BASIN.parse().unwrap()))
    .with_streams(StreamMatcher::Prefix("feeds-".parse().unwrap()));
    let secret = root
        .issue_access_token(IssueAccessTokenInput::new(
            "sdk-reader".parse().unwrap(),
            scope,
        ))
        .await
        .unwrap();
    let reader = client(&secret);
    let basin = reader.basin(BASIN.parse().unwrap());
    let from_start =
        || ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0)));
    let read = basin
        .stream("feeds-a".parse().unwrap())
        .read(from_start())
        .await
        .unwrap();
    assert_eq!(read.records.len(), 1);

    let refused = [
        basin
            .stream("feeds-a".parse().unwrap())
            .append(AppendInput::new(batch(&["no".into()])))
            .await
            .err()
            .map(|e| e.to_string()),
        basin
            .stream("private".parse().unwrap())
            .read(from_start())
            .await
            .err()
            .map(|e| e.to_string()),
        reader
            .create_basin(CreateBasinInput::new("sdk-other".parse().unwrap()))
            .await
            .err()
            .map(|e| e.to_string()),
    ];
    for error in refused {
        let error = error.expect("refused");
        assert!(error.contains("permission_denied"), "{error}");
    }
    drop(private);

    root.revoke_access_token("sdk-reader".parse().unwrap())
        .await
        .unwrap();
    let Err(error) = basin
        .stream("feeds-a".parse().unwrap())
        .read(from_start())
        .await
    else {
        panic!("a revoked token still reads");
    };
    let error = error.to_string();
    assert!(error.contains("unauthenticated"), "{error}");
}
