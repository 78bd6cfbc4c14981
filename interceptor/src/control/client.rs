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
