//! The BuildKit messages the gateway judges (`moby.buildkit.v1`, `api/services/control/
//! control.proto`), as prost types, and gRPC's message framing.
//!
//! Every field of a judged request is declared, embedded messages the gateway does not read
//! (the LLB definition, cache options, the source policy) as opaque bytes: the request is
//! decoded, judged, and encoded again from the decoded form, so the engine acts on exactly
//! the fields the plugins saw. A field number the gateway does not know is refused rather
//! than dropped or passed unread.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// `moby.buildkit.v1.SolveRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct SolveRequest {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    /// `pb.Definition`: raw LLB when no frontend is named.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub definition: Option<Bytes>,
    #[prost(string, tag = "3")]
    pub exporter_deprecated: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub exporter_attrs_deprecated: BTreeMap<String, String>,
    #[prost(string, tag = "5")]
    pub session: String,
    #[prost(string, tag = "6")]
    pub frontend: String,
    #[prost(btree_map = "string, string", tag = "7")]
    pub frontend_attrs: BTreeMap<String, String>,
    /// `CacheOptions`.
    #[prost(bytes = "bytes", optional, tag = "8")]
    pub cache: Option<Bytes>,
    #[prost(string, repeated, tag = "9")]
    pub entitlements: Vec<String>,
    /// `map<string, pb.Definition>`.
    #[prost(btree_map = "string, bytes", tag = "10")]
    pub frontend_inputs: BTreeMap<String, Vec<u8>>,
    #[prost(bool, tag = "11")]
    pub internal: bool,
    /// `sourcepolicy.Policy`.
    #[prost(bytes = "bytes", optional, tag = "12")]
    pub source_policy: Option<Bytes>,
    #[prost(message, repeated, tag = "13")]
    pub exporters: Vec<Exporter>,
    #[prost(bool, tag = "14")]
    pub enable_session_exporter: bool,
    #[prost(string, tag = "15")]
    pub source_policy_session: String,
    #[prost(int64, tag = "16")]
    pub compatibility_version: i64,
}

/// The field numbers [`SolveRequest`] declares.
pub const SOLVE_FIELDS: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// `moby.buildkit.v1.frontend.SolveRequest`: a client-driven build's frontend request
/// through the LLB bridge.
#[derive(Clone, PartialEq, Message)]
pub struct GatewaySolveRequest {
    /// `pb.Definition`: raw LLB when no frontend is named.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub definition: Option<Bytes>,
    #[prost(string, tag = "2")]
    pub frontend: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub frontend_opt: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "4")]
    pub import_cache_refs: Vec<String>,
    #[prost(bool, tag = "5")]
    pub allow_result_return: bool,
    #[prost(bool, tag = "6")]
    pub allow_result_array_ref: bool,
    #[prost(bool, tag = "10")]
    pub r#final: bool,
    #[prost(bytes = "bytes", tag = "11")]
    pub exporter_attr: Bytes,
    /// `CacheOptionsEntry`s.
    #[prost(bytes = "bytes", repeated, tag = "12")]
    pub cache_imports: Vec<Bytes>,
    /// `map<string, pb.Definition>`.
    #[prost(btree_map = "string, bytes", tag = "13")]
    pub frontend_inputs: BTreeMap<String, Vec<u8>>,
    #[prost(bool, tag = "14")]
    pub evaluate: bool,
    /// `sourcepolicy.Policy`s.
    #[prost(bytes = "bytes", repeated, tag = "15")]
    pub source_policies: Vec<Bytes>,
}

/// The field numbers [`GatewaySolveRequest`] declares.
pub const GATEWAY_SOLVE_FIELDS: &[u32] = &[1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15];

/// `pb.Definition`: the marshalled LLB operations.
#[derive(Clone, PartialEq, Message)]
pub struct Definition {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub def: Vec<Vec<u8>>,
}

/// The source of a `pb.Op`, when it is one (its other kinds are not read).
#[derive(Clone, PartialEq, Message)]
pub struct OpSource {
    #[prost(message, optional, tag = "3")]
    pub source: Option<SourceOp>,
}

/// `pb.SourceOp`.
#[derive(Clone, PartialEq, Message)]
pub struct SourceOp {
    #[prost(string, tag = "1")]
    pub identifier: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub attrs: BTreeMap<String, String>,
}

/// The sessions the local sources of an LLB definition read (`local.session`); an
/// undecodable definition is an error, since the engine would read it some way.
pub fn llb_sessions(definition: &[u8]) -> Result<Vec<String>, FrameError> {
    let d = Definition::decode(definition).map_err(|e| FrameError::Decode(e.to_string()))?;
    let mut out = Vec::new();
    for op in &d.def {
        let op = OpSource::decode(op.as_slice()).map_err(|e| FrameError::Decode(e.to_string()))?;
        if let Some(s) = op.source.filter(|s| s.identifier.starts_with("local://")) {
            if let Some(id) = s.attrs.get("local.session") {
                out.push(id.clone());
            }
        }
    }
    Ok(out)
}

/// `moby.buildkit.v1.Exporter`.
#[derive(Clone, PartialEq, Message)]
pub struct Exporter {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub attrs: BTreeMap<String, String>,
}

/// `moby.buildkit.v1.StatusRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct StatusRequest {
    #[prost(string, tag = "1")]
    pub r#ref: String,
}

/// `moby.buildkit.v1.BuildHistoryRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct BuildHistoryRequest {
    #[prost(bool, tag = "1")]
    pub active_only: bool,
    #[prost(string, tag = "2")]
    pub r#ref: String,
    #[prost(bool, tag = "3")]
    pub early_exit: bool,
    #[prost(string, repeated, tag = "4")]
    pub filter: Vec<String>,
    #[prost(int32, tag = "5")]
    pub limit: i32,
}

/// The head of a `moby.buildkit.v1.BuildHistoryEvent`: enough to say whose build it is.
#[derive(Clone, PartialEq, Message)]
pub struct BuildHistoryEventHead {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub record: Option<BuildHistoryRecordHead>,
}

/// The ref of a `moby.buildkit.v1.BuildHistoryRecord`.
#[derive(Clone, PartialEq, Message)]
pub struct BuildHistoryRecordHead {
    #[prost(string, tag = "1")]
    pub r#ref: String,
}

/// `moby.buildkit.v1.UpdateBuildHistoryRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct UpdateBuildHistoryRequest {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(bool, tag = "2")]
    pub pinned: bool,
    #[prost(bool, tag = "3")]
    pub delete: bool,
    #[prost(bool, tag = "4")]
    pub finalize: bool,
}

/// `moby.buildkit.v1.PruneRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PruneRequest {
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
    #[prost(bool, tag = "2")]
    pub all: bool,
    #[prost(int64, tag = "3")]
    pub keep_duration: i64,
    #[prost(int64, tag = "4")]
    pub reserved_space: i64,
    #[prost(int64, tag = "5")]
    pub max_used_space: i64,
    #[prost(int64, tag = "6")]
    pub min_free_space: i64,
}

/// `moby.buildkit.v1.DiskUsageRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct DiskUsageRequest {
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
    #[prost(int64, tag = "2")]
    pub age_limit: i64,
}

/// `moby.buildkit.v1.ListWorkersRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ListWorkersRequest {
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
}

/// `moby.buildkit.v1.InfoRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct InfoRequest {}

/// Why a gRPC message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("the request has no gRPC message")]
    Empty,
    #[error("the gRPC message is cut short")]
    Truncated,
    #[error("a unary call carries one gRPC message, this one carries more")]
    Several,
    #[error("compressed gRPC messages are not accepted")]
    Compressed,
    #[error("the protobuf message does not decode: {0}")]
    Decode(String),
    #[error("field {0} of {1} is unknown to the gateway")]
    UnknownField(u32, &'static str),
}

/// The one message of a unary call's request body (gRPC's length-prefixed framing).
pub fn single_message(body: &[u8]) -> Result<&[u8], FrameError> {
    let mut messages = Messages::new(body);
    let first = messages.next().ok_or(FrameError::Empty)??;
    if messages.next().is_some() {
        return Err(FrameError::Several);
    }
    Ok(first)
}

/// Reads length-prefixed gRPC messages off a buffer; what is left after the last whole
/// message stays in [`Messages::rest`].
pub struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes of an incomplete message at the end, if any.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// The next whole message without consuming it, with its framed length.
    fn peek(&self) -> Option<Result<(&'a [u8], usize), FrameError>> {
        if self.buf.is_empty() {
            return None;
        }
        if self.buf.len() < 5 {
            return Some(Err(FrameError::Truncated));
        }
        if self.buf[0] != 0 {
            return Some(Err(FrameError::Compressed));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        match self.buf.get(5..5 + len) {
            Some(m) => Some(Ok((m, 5 + len))),
            None => Some(Err(FrameError::Truncated)),
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<&'a [u8], FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.peek()? {
            Ok((m, n)) => {
                self.buf = &self.buf[n..];
                Some(Ok(m))
            }
            Err(FrameError::Truncated) => None,
            Err(e) => {
                self.buf = &[];
                Some(Err(e))
            }
        }
    }
}

/// One message framed for gRPC.
pub fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    // Encoding into a buffer sized by `encoded_len` cannot fail.
    let _ = message.encode(&mut out);
    out.freeze()
}

/// A message's bytes framed for gRPC.
pub fn frame_bytes(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Decodes a message of type `M`, refusing field numbers outside `known`.
pub fn decode<M: Message + Default>(
    bytes: &[u8],
    name: &'static str,
    known: &[u32],
) -> Result<M, FrameError> {
    let mut buf = bytes;
    while buf.has_remaining() {
        let (tag, wire) =
            prost::encoding::decode_key(&mut buf).map_err(|e| FrameError::Decode(e.to_string()))?;
        if !known.contains(&tag) {
            return Err(FrameError::UnknownField(tag, name));
        }
        prost::encoding::skip_field(wire, tag, &mut buf, Default::default())
            .map_err(|e| FrameError::Decode(e.to_string()))?;
    }
    M::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solve() -> SolveRequest {
        SolveRequest {
            r#ref: "r1".into(),
            session: "s1".into(),
            frontend: "dockerfile.v0".into(),
            frontend_attrs: [("label:a".to_string(), "b".to_string())].into(),
            exporters: vec![Exporter {
                r#type: "moby".into(),
                attrs: [("name".to_string(), "app:1".to_string())].into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_framed_message_reads_back() {
        let framed = frame(&solve());
        let one = single_message(&framed).unwrap();
        let back: SolveRequest = decode(one, "SolveRequest", SOLVE_FIELDS).unwrap();
        assert_eq!(back, solve());
    }

    #[test]
    fn bad_framing_is_refused() {
        assert_eq!(single_message(b""), Err(FrameError::Empty));
        assert_eq!(single_message(&[0, 0, 0, 0, 9, 1]), Err(FrameError::Empty));
        assert_eq!(
            single_message(&[1, 0, 0, 0, 0]),
            Err(FrameError::Compressed)
        );
        let mut two = frame(&solve()).to_vec();
        two.extend_from_slice(&frame(&solve()));
        assert_eq!(single_message(&two), Err(FrameError::Several));
    }

    #[test]
    fn unknown_fields_and_garbage_are_refused() {
        let mut bytes = solve().encode_to_vec();
        // Field 40, varint 1.
        bytes.extend_from_slice(&[0xc0, 0x02, 0x01]);
        let e = decode::<SolveRequest>(&bytes, "SolveRequest", SOLVE_FIELDS).unwrap_err();
        assert_eq!(e, FrameError::UnknownField(40, "SolveRequest"));
        let e = decode::<SolveRequest>(&[0x0a, 0x05, b'a'], "SolveRequest", SOLVE_FIELDS);
        assert!(matches!(e, Err(FrameError::Decode(_))), "{e:?}");
    }

    #[test]
    fn a_repeated_field_decodes_as_go_reads_it() {
        // Two `Session` fields: the last wins, in Go and here; the re-encoding has one.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0x2a, 0x01, b'a', 0x2a, 0x01, b'b']);
        let m: SolveRequest = decode(&bytes, "SolveRequest", SOLVE_FIELDS).unwrap();
        assert_eq!(m.session, "b");
        assert_eq!(m.encode_to_vec(), vec![0x2a, 0x01, b'b']);
    }
}
