//! A BuildKit client that speaks the gRPC API directly, for the tests of `tests/buildkit.rs`:
//! run as a unix user (`runuser -u bob -- grpc-probe ...`), so the gateway identifies it by
//! its peer credentials as it does the docker CLI. It sends what the docker CLI never would
//! (another user's session id, another user's build ref, raw LLB, broken frames) and prints
//! what came back, one JSON object on stdout.
//!
//! ```text
//! grpc-probe SOCKET session UUID SECONDS        open /session, hold it SECONDS, print "open"
//! grpc-probe SOCKET solve JSON                  a Solve (fields: ref, session, frontend, raw_llb, names)
//! grpc-probe SOCKET status REF                  Status of a build
//! grpc-probe SOCKET call METHOD HEX             METHOD with these message bytes (framed)
//! grpc-probe SOCKET big METHOD SIZE              METHOD with a message of SIZE zero bytes
//! grpc-probe SOCKET frame METHOD HEX            METHOD with these bytes as the whole body
//! grpc-probe SOCKET preface HEX                 open /grpc, send these bytes instead of HTTP/2
//! grpc-probe SOCKET reset METHOD HEX            send METHOD and reset the stream at once
//! ```

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::buildkit::proto;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Opens `path` (`/grpc` or `/session`) and returns the stream once the gateway answered
/// `101`, with whatever it sent after the head.
async fn upgrade(socket: &str, path: &str, headers: &str) -> Result<(UnixStream, Vec<u8>), Error> {
    let mut s = UnixStream::connect(socket).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n{headers}Content-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    if !text.starts_with("HTTP/1.1 101") {
        // The refusal's body follows a non-101 head.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        return Err(format!("no switch: {text}{}", String::from_utf8_lossy(&rest)).into());
    }
    Ok((s, Vec::new()))
}

/// Sends one unary call over `/grpc` and reports its gRPC status.
async fn call(socket: &str, method: &str, body: Bytes, reset: bool) -> Result<Value, Error> {
    let (stream, _) = upgrade(socket, "/grpc", "").await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://docker{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))?;
    let pending = sender.send_request(req);
    if reset {
        // Dropping the response future resets the stream.
        let _ = tokio::time::timeout(Duration::from_millis(300), pending).await;
        return Ok(json!({"reset": true}));
    }
    let resp = tokio::time::timeout(Duration::from_secs(60), pending).await??;
    let head_status = resp.headers().get("grpc-status").cloned();
    let head_message = resp.headers().get("grpc-message").cloned();
    let collected =
        tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect()).await?;
    let (status, message, bytes) = match collected {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            let status = head_status.or_else(|| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status").cloned())
            });
            let message = head_message.or_else(|| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-message").cloned())
            });
            (status, message, c.to_bytes().len())
        }
        Err(e) => return Ok(json!({"error": e.to_string()})),
    };
    let text =
        |v: Option<http::HeaderValue>| v.map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
    Ok(json!({
        "status": text(status).and_then(|s| s.parse::<u16>().ok()),
        "message": text(message).map(|m| percent_decode(&m)),
        "bytes": bytes,
    }))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn solve_request(spec: &Value) -> proto::SolveRequest {
    let str_of = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let names: Vec<String> = spec
        .get("names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let raw = spec
        .get("raw_llb")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    proto::SolveRequest {
        r#ref: str_of("ref"),
        session: str_of("session"),
        frontend: if raw {
            String::new()
        } else {
            str_of("frontend")
        },
        // An empty `pb.Definition`: no operations.
        definition: raw.then(Bytes::new),
        exporters: if names.is_empty() {
            Vec::new()
        } else {
            vec![proto::Exporter {
                r#type: "moby".into(),
                attrs: [("name".to_owned(), names.join(","))].into(),
            }]
        },
        ..Default::default()
    }
}

async fn main_async(args: Vec<String>) -> Result<Value, Error> {
    let socket = args
        .get(1)
        .ok_or("usage: grpc-probe SOCKET COMMAND ...")?
        .clone();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(2).as_str() {
        "session" => {
            let header = format!("X-Docker-Expose-Session-Uuid: {}\r\n", arg(3));
            let (_stream, _) = upgrade(&socket, "/session", &header).await?;
            println!("{}", json!({"open": true}));
            let secs: u64 = arg(4).parse().unwrap_or(30);
            // Held until then, or until the process that started it (runuser, killed by the
            // test) is gone.
            let parent = std::os::unix::process::parent_id();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
            while tokio::time::Instant::now() < deadline
                && std::os::unix::process::parent_id() == parent
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(json!({"closed": true}))
        }
        "solve" => {
            let spec: Value = serde_json::from_str(&arg(3))?;
            let body = proto::frame(&solve_request(&spec));
            call(&socket, "/moby.buildkit.v1.Control/Solve", body, false).await
        }
        "status" => {
            let body = proto::frame(&proto::StatusRequest { r#ref: arg(3) });
            call(&socket, "/moby.buildkit.v1.Control/Status", body, false).await
        }
        "call" => call(&socket, &arg(3), proto::frame_bytes(&hex(&arg(4))), false).await,
        "big" => {
            let size: usize = arg(4).parse()?;
            call(
                &socket,
                &arg(3),
                proto::frame_bytes(&vec![0u8; size]),
                false,
            )
            .await
        }
        "frame" => call(&socket, &arg(3), Bytes::from(hex(&arg(4))), false).await,
        "reset" => call(&socket, &arg(3), proto::frame_bytes(&hex(&arg(4))), true).await,
        "preface" => {
            let (mut stream, _) = upgrade(&socket, "/grpc", "").await?;
            stream.write_all(&hex(&arg(3))).await?;
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
            Ok(json!({"closed": read.is_ok(), "bytes": rest.len()}))
        }
        other => Err(format!("unknown command {other:?}").into()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = match rt.block_on(main_async(args)) {
        Ok(v) => v,
        Err(e) => json!({"error": e.to_string()}),
    };
    println!("{out}");
}
