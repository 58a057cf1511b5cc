//! `docker cp` throughput: a tar stream `PUT` into a container's `/tmp` and the same file
//! `GET` back out, each on a fresh connection as the CLI does, timed from the request's first
//! byte to the response's last.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::client::{self, TarStream};

/// A transfer slower than 10 MB/s (plus a minute) has failed: a stalled proxy then costs
/// under 3 minutes of the run for 1 GiB, not the proxies' own 10-minute timeouts.
fn timeout(size: u64) -> Duration {
    Duration::from_secs(60 + size / 10_000_000)
}

/// Uploads a `size`-byte file into `/tmp` of container `id`; returns the elapsed time.
pub async fn put(socket: &Path, id: &str, size: u64) -> Result<Duration> {
    let mut sender = client::connect::<TarStream>(socket).await?;
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/containers/{id}/archive?path=/tmp"))
        .header(http::header::HOST, "docker")
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .body(TarStream::new(size))?;
    let start = Instant::now();
    let run = async {
        sender.ready().await?;
        let response = sender.send_request(req).await.context("uploading")?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!(
                "PUT archive: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(())
    };
    tokio::time::timeout(timeout(size), run)
        .await
        .context("PUT archive timed out")??;
    Ok(start.elapsed())
}

/// Downloads the file [`put`] wrote, as a tar stream; returns the elapsed time. Fails unless
/// at least `size` bytes arrive.
pub async fn get(socket: &Path, id: &str, size: u64) -> Result<Duration> {
    let path = format!(
        "/containers/{id}/archive?path=/tmp/{}",
        TarStream::FILE_NAME
    );
    download(socket, &path, size, "GET archive")
        .await
        .map(|(elapsed, _)| elapsed)
}

/// Reads the whole log of container `id` (`GET /containers/{id}/logs?stdout=1`, what `docker
/// logs` asks for) on a fresh connection; returns the elapsed time and the bytes received (the
/// log lines and the engine's 8-byte frame header per line). Fails unless at least `size`
/// bytes arrive.
pub async fn logs(socket: &Path, id: &str, size: u64) -> Result<(Duration, u64)> {
    download(
        socket,
        &format!("/containers/{id}/logs?stdout=1"),
        size,
        "GET logs",
    )
    .await
}

/// `GET path` on a fresh connection, reading the streamed answer to its end; returns the
/// elapsed time and the bytes received. Fails unless the answer is 200 with at least `size`
/// bytes; `what` names the request in errors.
async fn download(socket: &Path, path: &str, size: u64, what: &str) -> Result<(Duration, u64)> {
    let mut sender = client::connect::<Full<Bytes>>(socket).await?;
    let req = client::request(Method::GET, path, None);
    let start = Instant::now();
    let run = async {
        sender.ready().await?;
        let response = sender
            .send_request(req)
            .await
            .context(format!("{what}: sending"))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.context(format!("{what}: reading"))?.into_data() {
                received += data.len() as u64;
            }
        }
        if status != StatusCode::OK {
            bail!("{what}: {status}");
        }
        if received < size {
            bail!("{what}: only {received} of {size} bytes arrived");
        }
        Ok(received)
    };
    let received = tokio::time::timeout(timeout(size), run)
        .await
        .context(format!("{what} timed out"))??;
    Ok((start.elapsed(), received))
}
