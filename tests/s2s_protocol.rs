//! Protobuf unary requests and S2S sessions, spoken by hand: frames are
//! built and parsed here so each case (pipelining, full duplex on HTTP/1.1
//! and HTTP/2, compression, malformed input) is pinned down exactly.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use prost::Message;
use reqwest::StatusCode;
use rill::wire::proto;
use rill::wire::s2s::{self, Compression, Frame};
use serde_json::Value;
use tokio::sync::mpsc;

fn input(bodies: &[&str], match_seq_num: Option<u64>) -> proto::AppendInput {
    proto::AppendInput {
        records: bodies
            .iter()
            .map(|b| proto::AppendRecord {
                timestamp: None,
                headers: vec![],
                body: Bytes::copy_from_slice(b.as_bytes()),
            })
            .collect(),
        match_seq_num,
        fencing_token: None,
    }
}

fn frame(message: &impl Message) -> Bytes {
    s2s::encode(&message.encode_to_vec(), Compression::None)
}

/// Reads frames off a streaming response.
struct FrameReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: s2s::Decoder,
}

impl FrameReader {
    fn new(resp: reqwest::Response) -> Self {
        Self {
            stream: resp.bytes_stream().boxed(),
            decoder: s2s::Decoder::default(),
        }
    }

    /// The next frame, or `None` when the response ends.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self
                .decoder
                .next_frame()
                .expect("server frames are well formed")
            {
                return Some(frame);
            }
            match tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("a frame within 10 s")
            {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                _ => {
                    self.decoder
                        .finish()
                        .expect("response ends on a frame boundary");
                    return None;
                }
            }
        }
    }

    async fn ack(&mut self) -> proto::AppendAck {
        match self.next().await {
            Some(Frame::Message(bytes)) => proto::AppendAck::decode(bytes).unwrap(),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    async fn terminal(&mut self) -> (u16, Value) {
        match self.next().await {
            Some(Frame::Terminal { status, body }) => {
                (status, serde_json::from_slice(&body).unwrap())
            }
            other => panic!("expected a terminal message, got {other:?}"),
        }
    }

    async fn batch(&mut self) -> proto::ReadBatch {
        match self.next().await {
            Some(Frame::Message(bytes)) => proto::ReadBatch::decode(bytes).unwrap(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }
}

/// Opens an append session whose request body is fed through a channel.
async fn open_append_session(
    server: &TestServer,
    client: &reqwest::Client,
    stream: &str,
) -> (mpsc::Sender<Bytes>, FrameReader) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let body = reqwest::Body::wrap_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>),
    );
    let resp = client
        .post(server.url(&format!("/v1/streams/{stream}/records")))
        .header("s2-basin", BASIN)
        .header("content-type", "s2s/proto")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "s2s/proto");
    (tx, FrameReader::new(resp))
}

async fn stored_bodies(server: &TestServer, stream: &str) -> Vec<String> {
    let resp = server
        .get(&format!("/v1/streams/{stream}/records?seq_num=0"))
        .send()
        .await
        .unwrap();
    if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        return vec![];
    }
    bodies(&expect_status(resp, StatusCode::OK).await)
}

#[tokio::test]
async fn unary_protobuf_append_and_read() {
    let server = TestServer::start().await;
    server.with_stream("p").await;
    let resp = server
        .post("/v1/streams/p/records")
        .header("content-type", "application/protobuf")
        .header("accept", "application/protobuf")
        .body(input(&["a", "b"], Some(0)).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/protobuf");
    let ack = proto::AppendAck::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(ack.start.unwrap().seq_num, 0);
    assert_eq!(ack.end.unwrap().seq_num, 2);

    let resp = server
        .get("/v1/streams/p/records?seq_num=0")
        .header("accept", "application/protobuf")
        .send()
        .await
        .unwrap();
    let batch = proto::ReadBatch::decode(resp.bytes().await.unwrap()).unwrap();
    let got: Vec<_> = batch
        .records
        .iter()
        .map(|r| (r.seq_num, r.body.clone()))
        .collect();
    assert_eq!(got, vec![(0, Bytes::from("a")), (1, Bytes::from("b"))]);

    // Errors stay JSON, with S2's 412 body.
    let resp = server
        .post("/v1/streams/p/records")
        .header("content-type", "application/x-protobuf")
        .body(input(&["c"], Some(0)).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::PRECONDITION_FAILED).await,
        serde_json::json!({"seq_num_mismatch": 2})
    );
    let resp = server
        .post("/v1/streams/p/records")
        .header("content-type", "application/protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_proto").await;
    assert_eq!(stored_bodies(&server, "p").await, ["a", "b"]);
}

async fn pipelined_session(client: reqwest::Client) {
    let server = TestServer::start().await;
    server.with_stream("sess").await;
    let (tx, mut acks) = open_append_session(&server, &client, "sess").await;

    // Full duplex: an ack arrives while the request body is still open.
    tx.send(frame(&input(&["one"], None))).await.unwrap();
    let ack = acks.ack().await;
    assert_eq!(
        (ack.start.unwrap().seq_num, ack.end.unwrap().seq_num),
        (0, 1)
    );

    // Pipelined: many inputs before reading any ack; acks come in order.
    for i in 0..50 {
        tx.send(frame(&input(&["x", "y"], Some(1 + 2 * i))))
            .await
            .unwrap();
    }
    for i in 0..50u64 {
        let ack = acks.ack().await;
        assert_eq!(ack.start.unwrap().seq_num, 1 + 2 * i);
        assert_eq!(ack.end.unwrap().seq_num, 3 + 2 * i);
    }
    drop(tx); // end of input: the session ends cleanly
    assert_eq!(acks.next().await, None);
    assert_eq!(stored_bodies(&server, "sess").await.len(), 101);
}

#[tokio::test]
async fn append_session_pipelines_over_http1() {
    pipelined_session(reqwest::Client::builder().http1_only().build().unwrap()).await;
}

#[tokio::test]
async fn append_session_pipelines_over_h2c() {
    pipelined_session(
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn failed_append_ends_session_and_nothing_after_it_applies() {
    let server = TestServer::start().await;
    server.with_stream("f").await;
    let (tx, mut acks) = open_append_session(&server, &server.client, "f").await;
    tx.send(frame(&input(&["ok"], Some(0)))).await.unwrap();
    tx.send(frame(&input(&["bad"], Some(7)))).await.unwrap();
    tx.send(frame(&input(&["after"], None))).await.unwrap();
    assert_eq!(acks.ack().await.end.unwrap().seq_num, 1);
    let (status, body) = acks.terminal().await;
    assert_eq!(status, 412);
    assert_eq!(body, serde_json::json!({"seq_num_mismatch": 1}));
    assert_eq!(acks.next().await, None);
    drop(tx);
    assert_eq!(stored_bodies(&server, "f").await, ["ok"]);
}

#[tokio::test]
async fn malformed_frames_end_only_their_session() {
    let server = TestServer::start().await;
    server.with_stream("m").await;
    let (healthy_tx, mut healthy) = open_append_session(&server, &server.client, "m").await;

    let mut valid_then_bad = frame(&input(&["fine"], None)).to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            [valid_then_bad.clone(), vec![0, 0, 2, 0b0110_0000, 1]].concat(),
            "bad_frame",
        ), // unknown compression
        (
            [valid_then_bad.clone(), vec![0, 0, 2, 0b0000_0001, 1]].concat(),
            "bad_frame",
        ), // reserved bits
        (
            [valid_then_bad.clone(), vec![0x30, 0, 0, 0]].concat(),
            "bad_frame",
        ), // oversized
        (
            [valid_then_bad.clone(), vec![0, 0, 3, 0, 0xff, 0xff]].concat(),
            "bad_proto",
        ), // not an AppendInput
        (
            [valid_then_bad.clone(), vec![0, 0, 9, 0, 1]].concat(),
            "bad_frame",
        ), // cut mid-frame
    ];
    valid_then_bad.clear();
    for (bytes, code) in cases {
        let resp = server
            .post("/v1/streams/m/records")
            .header("content-type", "s2s/proto")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let mut frames = FrameReader::new(resp);
        frames.ack().await;
        let (status, body) = frames.terminal().await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(frames.next().await, None);
    }
    // The other session is unaffected, and only whole appends were stored.
    healthy_tx
        .send(frame(&input(&["still-working"], None)))
        .await
        .unwrap();
    assert_eq!(healthy.ack().await.end.unwrap().seq_num, 6);
    drop(healthy_tx);
    let stored = stored_bodies(&server, "m").await;
    assert_eq!(stored.len(), 6);
    assert_eq!(stored.last().unwrap(), "still-working");
}

#[tokio::test]
async fn compressed_frames_both_ways() {
    let server = TestServer::start().await;
    server.with_stream("z").await;
    let big = "z".repeat(4000);
    for (encoding, compression) in [("zstd", Compression::Zstd), ("gzip", Compression::Gzip)] {
        let msg = input(&[big.as_str()], None).encode_to_vec();
        let resp = server
            .post("/v1/streams/z/records")
            .header("content-type", "s2s/proto")
            .body(s2s::encode(&msg, compression))
            .send()
            .await
            .unwrap();
        let mut acks = FrameReader::new(resp);
        acks.ack().await;
        assert_eq!(acks.next().await, None);

        let resp = server
            .get("/v1/streams/z/records?seq_num=0&count=1")
            .header("content-type", "s2s/proto")
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        let raw = resp.bytes().await.unwrap();
        let flag = raw[3];
        let expected_bits = if compression == Compression::Zstd {
            0b01
        } else {
            0b10
        };
        assert_eq!(
            (flag >> 5) & 0b11,
            expected_bits,
            "response uses {encoding}"
        );
        let mut decoder = s2s::Decoder::default();
        decoder.push(&raw);
        let Some(Frame::Message(bytes)) = decoder.next_frame().unwrap() else {
            panic!("no batch")
        };
        assert_eq!(
            proto::ReadBatch::decode(bytes).unwrap().records[0].body,
            Bytes::from(big.clone())
        );
    }
}

#[tokio::test]
async fn read_session_streams_heartbeats_and_live_batches() {
    let server = TestServer::start().await;
    server.with_stream("r").await;
    server.append("r", &["a", "b", "c"]).await;

    // Bounded: two records, then the response simply ends.
    let resp = server
        .get("/v1/streams/r/records?seq_num=0&count=2")
        .header("content-type", "s2s/proto")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "s2s/proto");
    let mut frames = FrameReader::new(resp);
    let batch = frames.batch().await;
    assert_eq!(
        batch.records.iter().map(|r| r.seq_num).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(frames.next().await, None);

    // Live: catch up, heartbeat with the tail, then new records as they land.
    let resp = server
        .get("/v1/streams/r/records?seq_num=1")
        .header("content-type", "s2s/proto")
        .send()
        .await
        .unwrap();
    let mut frames = FrameReader::new(resp);
    assert_eq!(frames.batch().await.records.len(), 2);
    let heartbeat = frames.batch().await;
    assert!(heartbeat.records.is_empty());
    assert_eq!(heartbeat.tail.unwrap().seq_num, 3);
    server.append("r", &["d"]).await;
    let live = frames.batch().await;
    assert_eq!(live.records[0].seq_num, 3);
    assert_eq!(live.records[0].body, Bytes::from("d"));
    // A live batch carries the tail: no heartbeat follows it (only idle
    // gaps do), so the next message is the next record.
    server.append("r", &["e"]).await;
    let next = frames.batch().await;
    assert_eq!(
        next.records.iter().map(|r| r.seq_num).collect::<Vec<_>>(),
        [4],
        "a heartbeat came between live batches"
    );

    // Errors before the session starts are plain HTTP errors.
    let resp = server
        .get("/v1/streams/r/records?seq_num=99")
        .header("content-type", "s2s/proto")
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;
}

#[tokio::test]
async fn shutdown_ends_open_append_sessions() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    let client = server.client.clone();
    let (tx, mut acks) = open_append_session(&server, &client, "s").await;
    tx.send(frame(&input(&["a"], None))).await.unwrap();
    acks.ack().await;
    let stopping = tokio::spawn(server.stop());
    let (status, body) = acks.terminal().await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "unavailable");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown completes while an append session was open")
        .unwrap();
    drop(tx);
}
