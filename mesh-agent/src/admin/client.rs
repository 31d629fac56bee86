//! Admin API client used by meshctl.
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixStream;

use super::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not there (exit code 3).
    #[error("cannot reach mesh-agent at {path}: {source} (is the daemon running? see --socket / MESH_ADMIN_SOCKET)")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The daemon answered with a refusal or failure (exit code 1).
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    #[error("admin API protocol error: {0}")]
    Protocol(String),
}

pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(socket: &Path) -> AdminClient {
        AdminClient {
            socket: socket.to_owned(),
        }
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call(Method::GET, path, Bytes::new()).await
    }

    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(Method::POST, path, Bytes::from(bytes)).await
    }

    /// Like [`AdminClient::post`], but an answer with status `also` is
    /// returned as `R` too (an endpoint whose refusals carry details).
    pub async fn post_accepting<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        also: StatusCode,
    ) -> Result<(StatusCode, R), ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (status, bytes) = self
            .exchange(Method::POST, path, Bytes::from(bytes))
            .await?;
        if status == also {
            let r = serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("{e}")))?;
            return Ok((status, r));
        }
        Self::decode(status, &bytes).map(|r| (status, r))
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<R, ClientError> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        Self::decode(status, &bytes)
    }

    /// The socket refused us: its file mode admits root and one group (the
    /// viewers', operators being members too), which the caller is not in.
    fn no_role(&self) -> ClientError {
        use std::os::unix::fs::MetadataExt as _;
        let group = std::fs::metadata(&self.socket)
            .ok()
            .map(|m| m.gid())
            .map(|gid| crate::unix_names::group_name(gid).unwrap_or_else(|| gid.to_string()));
        let message = match group {
            Some(group) => format!(
                "permission denied on {}: the admin API needs the viewer or operator role; \
                 the socket is open to root and to the members of group {group}",
                self.socket.display()
            ),
            None => format!(
                "permission denied on {}: the admin API needs the viewer or operator role",
                self.socket.display()
            ),
        };
        ClientError::Refused {
            status: StatusCode::FORBIDDEN,
            message,
        }
    }

    fn decode<R: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<R, ClientError> {
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("daemon answered {status}"));
            return Err(ClientError::Refused { status, message });
        }
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("{e}")))
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::PermissionDenied => self.no_role(),
                    _ => ClientError::Unreachable {
                        path: self.socket.clone(),
                        source,
                    },
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "mesh-agent")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}
