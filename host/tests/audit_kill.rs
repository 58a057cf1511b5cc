//! The promise of `durability = "sync"`: a gateway killed with SIGKILL under load loses no
//! record of a request whose response a client received. The real `portcullis serve`
//! binary runs in front of the dev engine (`PORTCULLIS_TEST_ENGINE`, else
//! `scripts/dev-engine`'s socket); clients hammer it from several threads; it is killed
//! mid-load; the store is reopened, verified, and compared with what the clients saw. Then
//! a new gateway opens the same store and the chain goes on.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis::audit::{OpenOptions, Store};

fn engine() -> String {
    let url = std::env::var("PORTCULLIS_TEST_ENGINE")
        .unwrap_or_else(|_| "unix:///var/tmp/portcullis-engine/docker.sock".into());
    let path = url.strip_prefix("unix://").expect("a unix engine address");
    assert!(
        UnixStream::connect(path).is_ok(),
        "no Docker engine answers at {url}: run `scripts/dev-engine start` (or `just test`)"
    );
    url
}

fn serve(dir: &Path) -> (Child, PathBuf) {
    let socket = dir.join("p.sock");
    let cfg = dir.join("portcullis.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"unix://{}\"]\n[engine]\nurl = \"{}\"\n[audit]\npath = \"store\"\ndurability = \"sync\"\n",
            socket.display(),
            engine()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("PORTCULLIS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start portcullis serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&socket, "/_ping").is_none() {
        assert!(
            Instant::now() < deadline,
            "the gateway did not start: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, socket)
}

/// One request on its own connection; the status when the whole response arrived.
fn get(socket: &Path, path: &str) -> Option<u16> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })?
        .parse()
        .ok()?;
    // Complete only if every byte of the body arrived before the connection ended.
    (raw.len() - end - 4 == len).then_some(status)
}

fn objects(dir: &Path) -> (Vec<String>, u64) {
    let store = Store::open(&dir.join("store"), &OpenOptions::default()).expect("reopen the store");
    let v = store.verify().expect("the chain survives a kill -9");
    let objects = store
        .iter_chain()
        .filter_map(|r| r.expect("record").0.object)
        .collect();
    (objects, v.last.unwrap_or(0))
}

#[test]
fn kill_9_under_load_loses_no_record_of_an_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket) = serve(dir.path());
    let tag = format!("pc-kill-{}", std::process::id());
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (socket, tag, answered, count, stop) = (
                socket.clone(),
                tag.clone(),
                answered.clone(),
                count.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A container that does not exist: the engine answers 404 at once, and
                    // the record's object names the request.
                    let name = format!("{tag}-{t}-{i}");
                    match get(&socket, &format!("/v1.41/containers/{name}/json")) {
                        Some(status) => {
                            assert_eq!(status, 404);
                            answered.lock().unwrap().push(name);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            if UnixStream::connect(&socket).is_err() {
                                break; // the gateway is gone
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::Relaxed) < 300 {
        assert!(Instant::now() < deadline, "too few requests answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL"); // mid-load: the clients are still sending
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }

    let answered = answered.lock().unwrap().clone();
    let (recorded, last) = objects(dir.path());
    let recorded: std::collections::HashSet<String> = recorded.into_iter().collect();
    let lost: Vec<&String> = answered.iter().filter(|n| !recorded.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no record: {:?}",
        lost.len(),
        answered.len(),
        &lost[..lost.len().min(10)]
    );

    // The store survives: a new gateway opens it and the chain goes on.
    let (child, socket) = serve(dir.path());
    assert_eq!(
        get(&socket, &format!("/v1.41/containers/{tag}-after/json")),
        Some(404)
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut child = child;
    child.wait().unwrap();
    let (recorded, after) = objects(dir.path());
    assert!(after > last);
    assert!(recorded.contains(&format!("{tag}-after")));
}
