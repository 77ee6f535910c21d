//! The CLI side of the control socket.

use super::request::Request;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the CLI waits for a reply before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `req` to the switchboard at `socket` and returns its `result`, or
/// the error it (or the connection) reported, said for a person.
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach switchboard at {}: {e} (is it running? pass -c PATH or the switch directory)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
    s.set_write_timeout(Some(REPLY_TIMEOUT)).ok();
    let line = format!("{}\n", req.to_line());
    s.write_all(line.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .map_err(|e| format!("reading the reply: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&reply).map_err(|e| format!("malformed reply: {e}"))?;
    if doc.get("ok").and_then(|v| v.as_bool()) == Some(true) {
        Ok(doc
            .get("result")
            .cloned()
            .unwrap_or(serde_json::Value::Null))
    } else {
        Err(doc
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("the switchboard reported an unspecified error")
            .to_string())
    }
}
