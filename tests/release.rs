//! A client that goes away mid-stream must not leave the gateway holding the engine
//! connection that fed it (issue #2: `logs -f`, `events`).
//!
//! The gateway runs in this process, so its upstream connections are this process's unix
//! sockets whose peer is the engine's socket ([`engine_connections_of_this_process`]). To make
//! that count exact, these gateways keep no idle pooled connections
//! (`engine.max_idle_connections = 0`): every engine connection open is one in use. This is
//! its own test binary, and its tests are serialized, so no other gateway in the process
//! disturbs the count.

use std::sync::Mutex;
use std::time::Duration;

use portcullis::Config;
use portcullis_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

const T: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_secs(20);
/// How long the gateway gets to notice the client left and close the engine side.
const RELEASE: Duration = Duration::from_secs(10);

fn gateway_without_idle_pool() -> Gateway {
    let mut config = Config::default();
    config.engine.max_idle_connections = 0;
    Gateway::start_with(config)
}

fn labels(name: &str) -> Vec<String> {
    vec![
        "--label".into(),
        TEST_LABEL.into(),
        "--label".into(),
        format!("portcullis-test-run={name}"),
    ]
}

fn wait_no_engine_connections(what: &str) {
    wait_for(what, RELEASE, || {
        (engine_connections_of_this_process() == 0).then_some(())
    });
}

#[test]
fn killed_logs_follow_releases_the_engine_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gw = gateway_without_idle_pool();
    let mut c = Cleanup::new();
    let name = c.container(&unique("release-logs"));
    ok_timeout(
        docker_direct()
            .args(["run", "-d", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "sh", "-c", TICKER]),
        T,
    );
    wait_no_engine_connections("a quiet baseline");

    let mut logs = Streaming::spawn(gw.docker().args(["logs", "-f", &name]));
    for _ in 0..3 {
        logs.expect_line(SOON, |l| l.starts_with("line "));
    }
    // The measure sees the stream (so its dropping to zero below means something).
    wait_for("exactly the logs stream's engine connection", SOON, || {
        (engine_connections_of_this_process() == 1).then_some(())
    });

    logs.kill();
    wait_no_engine_connections("the logs stream's engine connection to be closed");

    // The gateway still serves, and nothing stays open afterwards.
    ok_timeout(
        gw.docker()
            .args(["ps", "-q", "--filter", &format!("name={name}")]),
        T,
    );
    wait_no_engine_connections("the ps connections to be closed");
}

#[test]
fn killed_events_stream_releases_the_engine_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gw = gateway_without_idle_pool();
    let mut c = Cleanup::new();
    let name = c.container(&unique("release-events"));
    wait_no_engine_connections("a quiet baseline");

    // Filtered on a container of our own: once it is gone, nothing flows on this stream,
    // so only noticing the client's hang-up can free the engine side.
    // --since: no race between the stream starting and the create below.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 1;
    let mut events = Streaming::spawn(
        gw.docker()
            .args(["events", "--since", &since.to_string()])
            .args(["--filter", &format!("container={name}")])
            .args(["--format", "{{.Action}}"]),
    );
    ok_timeout(
        docker_direct()
            .args(["create", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "true"]),
        T,
    );
    events.expect_line(SOON, |l| l == "create");
    // The measure sees the stream (so its dropping to zero below means something).
    wait_for(
        "exactly the events stream's engine connection",
        SOON,
        || (engine_connections_of_this_process() == 1).then_some(()),
    );

    events.kill();
    wait_no_engine_connections("the events stream's engine connection to be closed");
    ok_timeout(
        gw.docker()
            .args(["ps", "-q", "--filter", &format!("name={name}")]),
        T,
    );
}
