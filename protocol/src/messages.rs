//! The protobuf messages of the S2 v1 API (`s2.proto`, package `s2.v1`)
//! that sessions carry, written out with prost's derive so no `protoc` is
//! needed at build time. Field numbers and types follow `s2.proto` exactly.

use bytes::Bytes;

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamPosition {
    #[prost(uint64, tag = "1")]
    pub seq_num: u64,
    #[prost(uint64, tag = "2")]
    pub timestamp: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendRecord {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<Header>,
    #[prost(bytes = "bytes", tag = "3")]
    pub body: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendInput {
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<AppendRecord>,
    #[prost(uint64, optional, tag = "2")]
    pub match_seq_num: Option<u64>,
    #[prost(string, optional, tag = "3")]
    pub fencing_token: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendAck {
    #[prost(message, optional, tag = "1")]
    pub start: Option<StreamPosition>,
    #[prost(message, optional, tag = "2")]
    pub end: Option<StreamPosition>,
    #[prost(message, optional, tag = "3")]
    pub tail: Option<StreamPosition>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SequencedRecord {
    #[prost(uint64, tag = "1")]
    pub seq_num: u64,
    #[prost(uint64, tag = "2")]
    pub timestamp: u64,
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Header>,
    #[prost(bytes = "bytes", tag = "4")]
    pub body: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadBatch {
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<SequencedRecord>,
    #[prost(message, optional, tag = "2")]
    pub tail: Option<StreamPosition>,
}
