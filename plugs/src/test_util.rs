//! Helpers shared by the plugs' unit tests.

use crate::{FrameBatch, Plug, RecvStatus};
use std::time::{Duration, Instant};

/// How long a test waits for frames before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Receives on `plug` until `want` frames arrived, bounded by [`WAIT`];
/// fails if the plug reports its peer gone meanwhile.
pub(crate) fn recv_frames(plug: &mut impl Plug, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut batch = FrameBatch::new();
    let mut got = Vec::new();
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} frames within {WAIT:?}",
            got.len()
        );
        batch.clear();
        let status = plug.recv_batch(&mut batch).unwrap();
        assert_ne!(status, RecvStatus::Closed, "the peer went away");
        got.extend((0..batch.len()).map(|i| batch.frame(i).to_vec()));
        if got.len() < want {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}
