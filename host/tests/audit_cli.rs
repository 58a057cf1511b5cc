//! `portcullis audit …` on stores built here: `verify` names the first edited, deleted or
//! reordered record (the store is edited below the chain, directly in sled); `list`
//! filters and formats; `show`, `export`, `stats`; and the clear errors for a locked,
//! missing or foreign store.

use std::path::Path;
use std::process::Output;
use std::time::SystemTime;

use portcullis::audit::{Encoded, OpenOptions, Record, Store};

mod common;
use common::portcullis;

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn record(user: &str, endpoint: &str, decision: &str, object: &str) -> Record {
    serde_json::from_value(serde_json::json!({
        "request_id": 7, "caller": {"user": user, "groups": [], "auth": "peer-credentials"},
        "method": "POST", "path": format!("/containers/{object}/start"), "endpoint": endpoint,
        "object": object, "decision": decision, "status": 204, "duration_us": 120
    }))
    .unwrap()
}

/// A store with `n` records: users alice (every third) and bob, endpoints cycling through
/// container.start, container.create, image.list; decisions alternating allow/deny.
fn build(dir: &Path, n: usize) -> Store {
    let store = Store::open(
        dir,
        &OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut tail, mut ms) = store.tail().unwrap();
    for i in 0..n {
        let user = if i % 3 == 0 { "alice" } else { "bob" };
        let endpoint = ["container.start", "container.create", "image.list"][i % 3];
        let decision = if i % 2 == 0 { "allow" } else { "deny" };
        let rs = [Encoded::new(&record(user, endpoint, decision, &format!("obj{i}"))).unwrap()];
        (tail, ms) = store.append(tail, ms, &rs, SystemTime::now()).unwrap();
    }
    store
}

fn verify(dir: &Path) -> Output {
    portcullis(&["audit", "verify", "--store", dir.to_str().unwrap()])
}

#[test]
fn verify_names_the_first_edited_deleted_or_reordered_record() {
    let key = |seq: u64| seq.to_be_bytes();

    // Intact.
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path(), 6));
    let out = stdout(&verify(dir.path()));
    assert!(out.starts_with("ok: 6 records (1..6)"), "{out}");

    // Edited: record 4's status changes from 204 to 200, its bytes otherwise intact.
    let store = Store::open(dir.path(), &OpenOptions::default()).unwrap();
    let records = store.raw_tree("records").unwrap();
    let v = records.get(key(4)).unwrap().unwrap().to_vec();
    let text = String::from_utf8_lossy(&v).replace("\"status\":204", "\"status\":200");
    // A block of one record: 11 bytes of block header, 68 of record header.
    let mut edited = v[..79].to_vec();
    edited.extend_from_slice(&text.as_bytes()[text.len() - (v.len() - 79)..]);
    assert_ne!(edited, v);
    records.insert(key(4), edited).unwrap();
    drop(store);
    let err = stderr(&verify(dir.path()));
    assert!(
        err.contains("broken at record 4") && err.contains("edited"),
        "{err}"
    );

    // Deleted.
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 6);
    store.raw_tree("records").unwrap().remove(key(3)).unwrap();
    drop(store);
    let err = stderr(&verify(dir.path()));
    assert!(
        err.contains("broken at record 3") && err.contains("missing"),
        "{err}"
    );

    // Reordered: records 2 and 5 swap places.
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 6);
    let records = store.raw_tree("records").unwrap();
    let (two, five) = (
        records.get(key(2)).unwrap().unwrap(),
        records.get(key(5)).unwrap().unwrap(),
    );
    records.insert(key(2), five).unwrap();
    records.insert(key(5), two).unwrap();
    drop(store);
    let err = stderr(&verify(dir.path()));
    assert!(err.contains("broken at record 2"), "{err}");

    // Rewritten consistently from record 3 on, but not the rest: the link from 4 breaks
    // if only 3 is rehashed.
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 6);
    let records = store.raw_tree("records").unwrap();
    let v = records.get(key(3)).unwrap().unwrap().to_vec();
    let prev: [u8; 32] = v[47..79].try_into().unwrap();
    let ms = u64::from_be_bytes(v[1..9].try_into().unwrap());
    let json = String::from_utf8_lossy(&v[79..])
        .replace("bob", "eve")
        .into_bytes();
    let hash = portcullis::audit::store::record_hash(3, &prev, ms, &json);
    let mut forged = v[..15].to_vec();
    forged.extend_from_slice(&hash);
    forged.extend_from_slice(&prev);
    forged.extend_from_slice(&json);
    records.insert(key(3), forged).unwrap();
    drop(store);
    let err = stderr(&verify(dir.path()));
    assert!(
        err.contains("broken at record 4") && err.contains("does not link to record 3"),
        "{err}"
    );
}

#[test]
fn list_filters_newest_first_as_a_table_or_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path(), 12));
    let d = dir.path().to_str().unwrap();

    let out = stdout(&portcullis(&[
        "audit", "list", "--store", d, "--user", "alice", "--limit", "3", "--json",
    ]));
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .inspect(|v| assert_eq!(v["caller"]["user"], "alice"))
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![10, 7, 4]);

    let out = stdout(&portcullis(&[
        "audit",
        "list",
        "--store",
        d,
        "--endpoint",
        "container.*",
        "--decision",
        "deny",
        "--json",
    ]));
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| serde_json::from_str::<Record>(l).unwrap().seq)
        .collect();
    assert_eq!(seqs, vec![10, 8, 4, 2]);

    let out = stdout(&portcullis(&[
        "audit", "list", "--store", d, "--object", "obj5", "--since", "1h",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("     SEQ  TIME"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains("bob") && lines[1].contains("deny") && lines[1].contains("image.list"),
        "{out}"
    );

    let out = stdout(&portcullis(&[
        "audit",
        "list",
        "--store",
        d,
        "--until",
        "2000-01-01T00:00:00Z",
    ]));
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    let err = stderr(&portcullis(&[
        "audit",
        "list",
        "--store",
        d,
        "--decision",
        "maybe",
    ]));
    assert!(err.contains("unknown decision"), "{err}");

    let show: Record =
        serde_json::from_str(&stdout(&portcullis(&["audit", "show", "5", "--store", d]))).unwrap();
    assert_eq!((show.seq, show.object.as_deref()), (5, Some("obj4")));
    assert!(stderr(&portcullis(&["audit", "show", "99", "--store", d])).contains("no record 99"));

    let out = stdout(&portcullis(&[
        "audit", "export", "--format", "jsonl", "--store", d,
    ]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[1]["prev"], lines[0]["hash"]);

    let out = stdout(&portcullis(&["audit", "stats", "--store", d]));
    assert!(out.contains("records: 12 (seq 1..12)"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "4  alice"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "6  deny"), "{out}");
}

#[test]
fn locked_missing_and_foreign_stores_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 1);
    let d = dir.path().to_str().unwrap();
    let err = stderr(&portcullis(&["audit", "list", "--store", d]));
    assert!(err.contains("in use by a running gateway"), "{err}");
    assert!(
        err.contains("pass the gateway's --config FILE instead of --store"),
        "{err}"
    );
    // With the gateway's config the command asks its admin listener; none answers here.
    let admin_cfg = dir.path().join("admin.toml");
    std::fs::write(
        &admin_cfg,
        format!("[audit]\npath = \"{d}\"\n[admin]\nlisten = \"unix:///tmp/pc-admin-x.sock\"\n"),
    )
    .unwrap();
    let err = stderr(&portcullis(&[
        "audit",
        "stats",
        "--config",
        admin_cfg.to_str().unwrap(),
    ]));
    assert!(
        err.contains("the gateway's admin listener at unix:///tmp/pc-admin-x.sock"),
        "{err}"
    );
    // A config without [admin]: the error says what to add.
    std::fs::write(&admin_cfg, format!("[audit]\npath = \"{d}\"\n")).unwrap();
    let err = stderr(&portcullis(&[
        "audit",
        "list",
        "--config",
        admin_cfg.to_str().unwrap(),
    ]));
    assert!(err.contains("add an [admin] table"), "{err}");
    std::fs::remove_file(&admin_cfg).unwrap();
    drop(store);
    stdout(&portcullis(&["audit", "list", "--store", d]));

    // Through the gateway's config file.
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(&cfg, format!("[audit]\npath = \"{d}\"\n")).unwrap();
    let out = stdout(&portcullis(&[
        "audit",
        "verify",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert!(out.starts_with("ok: 1 records"), "{out}");
    std::fs::write(&cfg, "[limits]\nmax_connections = 1\nmax_header_bytes = 9000\nmax_headers = 5\nmax_body_bytes = 5\nheader_read_timeout = \"1s\"\nshutdown_grace = \"1s\"\n").unwrap();
    let err = stderr(&portcullis(&[
        "audit",
        "verify",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert!(err.contains("no [audit] table"), "{err}");

    let missing = dir.path().join("nope");
    let err = stderr(&portcullis(&[
        "audit",
        "stats",
        "--store",
        missing.to_str().unwrap(),
    ]));
    assert!(err.contains("no audit store at"), "{err}");
    assert!(!missing.exists(), "the CLI never creates a store");

    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("db"), b"not a database at all").unwrap();
    std::fs::write(other.path().join("data.csv"), b"a,b").unwrap();
    let err = stderr(&portcullis(&[
        "audit",
        "verify",
        "--store",
        other.path().to_str().unwrap(),
    ]));
    assert!(err.contains("not a portcullis audit store"), "{err}");
    assert_eq!(
        std::fs::read(other.path().join("db")).unwrap(),
        b"not a database at all"
    );

    let err = stderr(&portcullis(&["audit", "list"]));
    assert!(err.contains("--config FILE or --store DIR"), "{err}");
}
