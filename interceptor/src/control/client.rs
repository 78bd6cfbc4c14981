//! The CLI side of the control socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
};

use super::{Reply, Request};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket, or it may not be opened.
    #[error("cannot reach the interceptor daemon at {path}: {source} (is `interceptor daemon` running, with the same config?)")]
    Connect { path: String, source: std::io::Error },
    /// The connection broke mid-request.
    #[error("control socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The daemon answered something that is not a reply.
    #[error("control socket {path}: unreadable reply: {message}")]
    Protocol { path: String, message: String },
}

/// Sends one request and reads its reply.
pub fn call(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    let path = socket.display().to_string();
    let stream = UnixStream::connect(socket)
        .map_err(|source| ClientError::Connect { path: path.clone(), source })?;
    let io_err = |source| ClientError::Io { path: path.clone(), source };
    let mut line = serde_json::to_vec(request)
        .map_err(|err| ClientError::Protocol { path: path.clone(), message: err.to_string() })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_err)?;

    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io_err)?;
    if reply.is_empty() {
        return Err(ClientError::Protocol { path, message: "daemon closed the connection".into() });
    }
    serde_json::from_str(&reply)
        .map_err(|err| ClientError::Protocol { path, message: err.to_string() })
}

/// Sends `request` and hands every line of the daemon's stream to `on_line` until the daemon
/// closes it or `stop` says so (checked whenever a read is interrupted by a signal).
pub fn stream(
    socket: &Path,
    request: &Request,
    stop: &dyn Fn() -> bool,
    on_line: &mut dyn FnMut(&str) -> std::io::Result<()>,
) -> Result<(), ClientError> {
    use std::io::Read as _;

    let path = socket.display().to_string();
    let mut stream = UnixStream::connect(socket)
        .map_err(|source| ClientError::Connect { path: path.clone(), source })?;
    let io_err = |source| ClientError::Io { path: path.clone(), source };
    let mut line = serde_json::to_vec(request)
        .map_err(|err| ClientError::Protocol { path: path.clone(), message: err.to_string() })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;

    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // A raw read, not BufRead: those retry on EINTR, and Ctrl-C must end the loop.
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
                if stop() {
                    return Ok(());
                }
                continue;
            }
            Err(err) => return Err(io_err(err)),
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            on_line(String::from_utf8_lossy(&line).trim_end()).map_err(io_err)?;
        }
    }
}
