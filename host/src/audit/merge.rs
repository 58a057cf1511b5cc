//! One view of several gateways' trails: `portcullis audit merge` reads the exports of
//! several gateways (`audit export --format jsonl`), checks each gateway's chain line by
//! line, and writes one stream ordered by time in which every line names its gateway.
//!
//! An exported line is the record as `audit show` prints it plus its `prev` and `hash`.
//! The store hashes the record without its `seq` and `time` (they are the block's key and
//! write time, and `time` is that write time to the millisecond), so the hash is recomputed
//! here from the line alone, with [`store::record_hash`]: an edited, removed, reordered or
//! moved line is caught as `audit verify` catches it in a store. A merged stream is an
//! input like any other: its lines keep their `gateway`, so merging it again (to a file or
//! to nowhere) checks every chain in it again.
//!
//! Memory is one pending line per input and one chain state per gateway: each input is in
//! time order already (a chain's time never decreases), so the merge is a k-way merge.
//!
//! What a line alone cannot show: records cut off after the last one exported. The summary
//! gives each chain's head hash, which `audit verify` on that gateway prints too.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde_json::{Map, Value};

use super::store::{self, record_hash};
use super::{AuditError, Record};

/// The field a merged line names its gateway in.
pub const GATEWAY: &str = "gateway";

/// One export to merge.
pub struct Input {
    /// The gateway its lines came from, unless a line names its own (a merged stream).
    pub name: String,
    /// Where the export was read from, for errors.
    pub file: String,
    /// The export's lines.
    pub lines: Box<dyn BufRead>,
}

/// One gateway's chain as it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The gateway's name.
    pub gateway: String,
    /// Records read.
    pub records: u64,
    /// First and last sequence.
    pub first: u64,
    pub last: u64,
    /// Whether the chain starts at the store's first record (not after retention).
    pub from_start: bool,
    /// The last record's hash (hex): compare with `audit verify` on the gateway.
    pub head_hash: String,
}

/// A line after its checks: where it sorts, and what is written.
struct Line {
    ms: u64,
    gateway: String,
    seq: u64,
    out: Map<String, Value>,
}

/// An input's reader and its next line.
struct Reader {
    input: Input,
    line_no: u64,
    last_ms: u64,
    next: Option<Line>,
}

/// Checks every input's chains and writes their records to `out`, oldest first, each
/// with its `gateway`. Stops at the first line that breaks a chain, naming the file and
/// line, having written only checked lines before it.
pub fn merge(inputs: Vec<Input>, out: &mut dyn Write) -> Result<Vec<Chain>, AuditError> {
    let mut chains: HashMap<String, (Chain, String, u64)> = HashMap::new();
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut readers: Vec<Reader> = inputs
        .into_iter()
        .map(|input| Reader {
            input,
            line_no: 0,
            last_ms: 0,
            next: None,
        })
        .collect();
    for i in 0..readers.len() {
        readers[i].next = read(&mut readers, i, &mut chains, &mut owners)?;
    }
    loop {
        let next = readers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.next.as_ref().map(|l| (i, (l.ms, &l.gateway, l.seq))))
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(i, _)| i);
        let Some(i) = next else { break };
        if let Some(line) = readers[i].next.take() {
            serde_json::to_writer(&mut *out, &line.out).map_err(encode)?;
            writeln!(out).map_err(write_err)?;
        }
        readers[i].next = read(&mut readers, i, &mut chains, &mut owners)?;
    }
    out.flush().map_err(write_err)?;
    let mut chains: Vec<Chain> = chains.into_values().map(|(c, _, _)| c).collect();
    chains.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    Ok(chains)
}

/// Reads and checks the next non-empty line of input `i`.
fn read(
    readers: &mut [Reader],
    i: usize,
    chains: &mut HashMap<String, (Chain, String, u64)>,
    owners: &mut HashMap<String, usize>,
) -> Result<Option<Line>, AuditError> {
    let mut text = String::new();
    let r = &mut readers[i];
    loop {
        text.clear();
        let n = r
            .input
            .lines
            .read_line(&mut text)
            .map_err(|e| AuditError::Export {
                file: r.input.file.clone(),
                line: r.line_no + 1,
                what: format!("cannot read: {e}"),
            })?;
        if n == 0 {
            return Ok(None);
        }
        r.line_no += 1;
        if !text.trim().is_empty() {
            break;
        }
    }
    let (file, line_no) = (r.input.file.clone(), r.line_no);
    let bad = |what: String| AuditError::Export {
        file: file.clone(),
        line: line_no,
        what,
    };
    let out: Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| bad(format!("is not a JSON object: {e}")))?;
    let gateway = match out.get(GATEWAY) {
        Some(Value::String(g)) => g.clone(),
        Some(_) => return Err(bad(format!("its {GATEWAY:?} is not a string"))),
        None => r.input.name.clone(),
    };
    match owners.get(&gateway) {
        Some(&owner) if owner != i => {
            return Err(bad(format!(
                "gateway {gateway:?} is also in {}: name each export NAME=FILE",
                readers[owner].input.file
            )))
        }
        Some(_) => {}
        None => {
            owners.insert(gateway.clone(), i);
        }
    }
    let r = &mut readers[i];
    let line = check(out, gateway, chains).map_err(bad)?;
    if line.ms < r.last_ms {
        return Err(bad(
            "is older than the line before it: the export is not in time order".into(),
        ));
    }
    r.last_ms = line.ms;
    Ok(Some(line))
}

/// Checks one exported line (`out`, of `gateway`) against its gateway's chain and advances
/// the chain.
fn check(
    mut out: Map<String, Value>,
    gateway: String,
    chains: &mut HashMap<String, (Chain, String, u64)>,
) -> Result<Line, String> {
    let hex_field = |o: &mut Map<String, Value>, k: &str| -> Result<[u8; 32], String> {
        let v = o.remove(k).ok_or_else(|| format!("has no {k:?}"))?;
        let s = v
            .as_str()
            .ok_or_else(|| format!("its {k:?} is not a string"))?;
        let mut h = [0u8; 32];
        hex::decode_to_slice(s, &mut h)
            .map_err(|_| format!("its {k:?} is not a SHA-256 in hex"))?;
        Ok(h)
    };
    let mut fields = out.clone();
    fields.remove(GATEWAY);
    let prev = hex_field(&mut fields, "prev")?;
    let hash = hex_field(&mut fields, "hash")?;
    let mut record: Record = serde_json::from_value(Value::Object(fields))
        .map_err(|e| format!("is not an audit record: {e}"))?;
    let seq = record.seq;
    if seq == 0 {
        return Err("has no \"seq\"".into());
    }
    let ms = humantime::parse_rfc3339(&record.time)
        .map(store::millis)
        .map_err(|e| {
            format!(
                "its \"time\" {:?} is not an RFC 3339 time: {e}",
                record.time
            )
        })?;
    // What the store hashed: the record without the two fields its block holds.
    record.seq = 0;
    record.time.clear();
    let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    if record_hash(seq, &prev, ms, &json) != hash {
        return Err(format!(
            "record {seq} of gateway {gateway:?}: content does not match its hash (edited)"
        ));
    }
    let hash_hex = hex::encode(hash);
    match chains.get_mut(&gateway) {
        Some((chain, last_hash, last_ms)) => {
            if seq != chain.last + 1 {
                let what = if seq <= chain.last {
                    "comes again or out of order".to_string()
                } else {
                    format!("follows record {}: records between are missing", chain.last)
                };
                return Err(format!("record {seq} of gateway {gateway:?} {what}"));
            }
            if hex::encode(prev) != *last_hash {
                return Err(format!(
                    "record {seq} of gateway {gateway:?} does not link to record {}: records before it were edited, removed or reordered",
                    chain.last
                ));
            }
            if ms < *last_ms {
                return Err(format!(
                    "record {seq} of gateway {gateway:?} is older than the record before it"
                ));
            }
            chain.records += 1;
            chain.last = seq;
            chain.head_hash.clone_from(&hash_hex);
            *last_hash = hash_hex;
            *last_ms = ms;
        }
        None if seq == 1 && prev != [0; 32] => {
            return Err(format!(
                "record 1 of gateway {gateway:?} does not link to the start of a chain"
            ))
        }
        None => {
            let chain = Chain {
                gateway: gateway.clone(),
                records: 1,
                first: seq,
                last: seq,
                from_start: seq == 1,
                head_hash: hash_hex.clone(),
            };
            chains.insert(gateway.clone(), (chain, hash_hex, ms));
        }
    }
    out.insert(GATEWAY.into(), Value::String(gateway.clone()));
    Ok(Line {
        ms,
        gateway,
        seq,
        out,
    })
}

fn encode(e: serde_json::Error) -> AuditError {
    AuditError::Encode(e.to_string())
}

fn write_err(e: std::io::Error) -> AuditError {
    AuditError::Encode(format!("cannot write the merged trail: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::report;
    use crate::audit::store::{Encoded, OpenOptions, Store};
    use serde_json::json;

    fn record(n: u64, user: &str) -> Record {
        serde_json::from_value(json!({
            "request_id": n, "caller": {"user": user, "groups": [], "auth": "peer"},
            "method": "POST", "path": "/containers/create", "endpoint": "container.create",
            "decision": if n.is_multiple_of(2) { "deny" } else { "allow" }, "status": 201,
            "duration_us": 10 + n, "details": {"Image": "busybox", "Env": ["A=1"], "x": 0.1}
        }))
        .expect("a record")
    }

    /// The export of a store holding `n` records of `user`, appended in `groups`.
    fn export(n: u64, user: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("s"),
            &OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        )
        .expect("store");
        let (mut tail, mut ms) = store.tail().expect("tail");
        for i in 1..=n {
            let e = Encoded::new(&record(i, user)).expect("encode");
            (tail, ms) = store
                .append(tail, ms, &[e], std::time::SystemTime::now())
                .expect("append");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut out = Vec::new();
        report::export(&store, &mut out).expect("export");
        String::from_utf8(out).expect("utf-8")
    }

    fn input(name: &str, text: String) -> Input {
        Input {
            name: name.into(),
            file: format!("{name}.jsonl"),
            lines: Box::new(std::io::Cursor::new(text.into_bytes())),
        }
    }

    fn merged(inputs: Vec<Input>) -> Result<(Vec<Chain>, Vec<Value>), AuditError> {
        let mut out = Vec::new();
        let chains = merge(inputs, &mut out)?;
        let lines = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        Ok((chains, lines))
    }

    #[test]
    fn two_exports_merge_in_time_order_and_the_result_verifies_again() {
        let (a, b) = (export(4, "alice"), export(3, "bob"));
        let (chains, lines) = merged(vec![input("a", a), input("b", b)]).expect("merge");
        assert_eq!(lines.len(), 7);
        assert_eq!(chains.len(), 2);
        assert!(chains.iter().all(|c| c.from_start && c.first == 1));
        assert_eq!((chains[0].records, chains[1].records), (4, 3));
        let times: Vec<&str> = lines
            .iter()
            .map(|l| l["time"].as_str().unwrap_or(""))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        for l in &lines {
            let user = l["caller"]["user"].as_str().unwrap_or("");
            let gw = l[GATEWAY].as_str().unwrap_or("");
            assert_eq!((gw, user), (if user == "alice" { "a" } else { "b" }, user));
        }
        // The merged stream is an input too: merging it again checks both chains again.
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let (again, relines) = merged(vec![input("m", text)]).expect("re-merge");
        assert_eq!(again, chains);
        assert_eq!(relines, lines);
    }

    #[test]
    fn an_edited_removed_or_reordered_line_is_named() {
        let a = export(4, "alice");
        let lines: Vec<&str> = a.lines().collect();
        let edited = a.replacen("\"A=1\"", "\"A=2\"", 1);
        let removed = [lines[0], lines[2], lines[3]].join("\n");
        let swapped = [lines[0], lines[2], lines[1], lines[3]].join("\n");
        for (text, line, what) in [
            (edited, 1, "does not match its hash"),
            (removed, 2, "records between are missing"),
            (swapped, 2, "records between are missing"),
        ] {
            let e = merged(vec![input("a", text)]).expect_err("a broken chain");
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("a.jsonl, line {line}")) && shown.contains(what),
                "{shown}"
            );
        }
    }

    #[test]
    fn the_same_gateway_in_two_inputs_is_refused() {
        let a = export(2, "alice");
        let e = merged(vec![input("a", a.clone()), input("a", a)]).expect_err("refused");
        assert!(e.to_string().contains("NAME=FILE"), "{e}");
    }
}
