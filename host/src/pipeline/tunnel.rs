//! The raw tunnel behind an upgraded attach or exec: bytes are copied both ways, and a
//! half-close is passed on (the client's EOF on stdin becomes a write shutdown towards the
//! engine), which is what makes `echo hi | docker exec -i c cat` print `hi` and exit.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

/// Buffer per direction; attach traffic is interactive, larger buffers only add memory.
const BUF: usize = 16 * 1024;

/// Spawns the tunnel; it ends when both directions have finished. `permit` bounds the
/// number of tunnels open at once and is released when the tunnel ends.
pub fn splice(client: OnUpgrade, engine: OnUpgrade, permit: OwnedSemaphorePermit) {
    tokio::spawn(async move {
        let _permit = permit;
        let (client, engine) = tokio::join!(client, engine);
        let (client, engine) = match (client, engine) {
            (Ok(c), Ok(e)) => (c, e),
            (c, e) => {
                debug!(client = ?c.err(), engine = ?e.err(), "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut engine = TokioIo::new(engine);
        match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut engine, BUF, BUF).await {
            Ok((up, down)) => debug!(up, down, "tunnel closed"),
            Err(e) => debug!(error = %e, "tunnel closed with an error"),
        }
    });
}
